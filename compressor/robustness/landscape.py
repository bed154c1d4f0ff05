"""Loss landscape along two filter-normalised random directions (Li, Xu, Taylor, Studer & Goldstein 2018).

The surface is ``L(theta + a * d1 + b * d2)`` on a grid of ``(a, b)``. Each direction is Gaussian, then every
filter of every weight tensor (one row along the output dimension of a convolution or linear layer) is rescaled
to the norm of the same filter in ``theta``: ``d_f <- d_f / ||d_f|| * ||theta_f||``. This removes the scale
invariance of ReLU networks with batch norm, so surfaces of different models can be compared (RoS-KD Figure 4).
Biases and batch-norm parameters get a zero direction (Li et al.'s "ignore biasbn"); buffers are unchanged.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import Tensor

from compressor.progress import progress_bar
from compressor.robustness.attacks import attack_loss
from compressor.task import Task


def filter_normalized_direction(model: torch.nn.Module, generator: torch.Generator) -> list[Tensor]:
    """One random direction with the shapes of ``model.parameters()``, filter-normalised to the weights."""
    direction = []
    for p in model.parameters():
        if p.dim() <= 1:
            direction.append(torch.zeros_like(p))
            continue
        d = torch.randn(p.shape, generator=generator).to(p.device, p.dtype)
        d_norm = d.flatten(1).norm(dim=1).clamp_min(1e-10)
        p_norm = p.detach().flatten(1).norm(dim=1)
        direction.append(d * (p_norm / d_norm).view(-1, *([1] * (p.dim() - 1))))
    return direction


@torch.no_grad()
def loss_surface(model: torch.nn.Module, x: Tensor, labels: Tensor, task: Task, *, grid: int, span: float,
                 generator: torch.Generator, batch_size: int = 512, description: str = "loss landscape") -> dict:
    """Mean loss and accuracy of ``model`` on ``(x, labels)`` over a ``grid x grid`` plane of weights.

    Args:
        model: the trained model (left untouched: a copy is perturbed).
        x: images in [0, 1] ``[N, C, H, W]``.
        labels: ``int64 [N]`` classes or ``float [N, L]`` 0/1 labels.
        task: what the model predicts (multi-label: per-class BCE summed over classes, as the attacks use).
        grid: points per axis.
        span: the coordinates run over ``linspace(-span, span, grid)``.
        generator: CPU generator of the two directions.
        batch_size: images per forward pass.
        description: progress bar label.

    Returns:
        ``{"coordinates": [...], "loss": [[...]], "accuracy": [[...]]}`` with ``loss[i][j]`` at
        ``(a, b) = (coordinates[j], coordinates[i])`` (rows follow the second direction, as a contour expects).
    """
    work = copy.deepcopy(model).eval()
    params = list(work.parameters())
    origin = [p.detach().clone() for p in params]
    d1 = filter_normalized_direction(work, generator)
    d2 = filter_normalized_direction(work, generator)
    coords = np.linspace(-span, span, grid)
    loss = np.zeros((grid, grid))
    accuracy = np.zeros((grid, grid))
    with progress_bar(description, grid * grid) as bar:
        for i, b in enumerate(coords):
            for j, a in enumerate(coords):
                for p, p0, u, v in zip(params, origin, d1, d2, strict=True):
                    p.copy_(p0 + float(a) * u + float(b) * v)
                total, wrong = 0.0, 0
                for xb, y in zip(x.split(batch_size), labels.split(batch_size), strict=True):
                    logits = work(xb)
                    total += float(attack_loss(logits, y, task).sum())
                    wrong += int((~task.correct(logits, y)).sum())
                loss[i, j] = total / len(x)
                accuracy[i, j] = 1.0 - wrong / len(x)
                bar.advance()
    return {"coordinates": coords.tolist(), "loss": loss.tolist(), "accuracy": accuracy.tolist()}
