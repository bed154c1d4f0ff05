"""Supervised training of one classifier on (noisy) labels: teachers and the student-alone baseline."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from compressor.data.types import Split
from compressor.progress import progress_bar
from compressor.spec.training import TrainSpec
from compressor.training.batches import augment, batch_indices, to_float
from compressor.training.losses import labels_tensor, supervised_loss
from compressor.training.optim import build_optimizer, build_scheduler


@dataclass
class History:
    """Per-epoch training figures."""

    loss: list[float] = field(default_factory=list)
    accuracy: list[float] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)
    extra: dict[str, list[float]] = field(default_factory=dict)

    def log(self, **values: float) -> None:
        """Append one epoch's named figures to ``extra``."""
        for key, value in values.items():
            self.extra.setdefault(key, []).append(float(value))

    def as_dict(self) -> dict:
        return {"loss": self.loss, "accuracy": self.accuracy, "lr": self.lr, **self.extra}


def batch_accuracy(logits: torch.Tensor, targets: torch.Tensor, task: str) -> float:
    """Share of correct predictions against the (possibly noisy) training targets."""
    if task == "multilabel":
        return float(((logits > 0).float() == targets).float().mean())
    return float((logits.argmax(1) == targets).float().mean())


def train_supervised(
    model: torch.nn.Module,
    data: Split,
    spec: TrainSpec,
    task: str,
    device: torch.device | str,
    generator: torch.Generator,
    description: str = "train",
) -> History:
    """Train ``model`` in place on ``data`` with cross-entropy (or BCE for multi-label) following ``spec``.

    Returns:
        The per-epoch history (mean loss, accuracy on the training labels, learning rate).
    """
    model.to(device).train()
    optimizer = build_optimizer(model.parameters(), spec.optimizer)
    scheduler = build_scheduler(optimizer, spec.schedule, spec.epochs)
    history = History()
    steps = -(-len(data) // spec.batch_size)
    with progress_bar(description, spec.epochs * steps) as bar:
        for _ in range(spec.epochs):
            total_loss, total_acc, seen = 0.0, 0.0, 0
            for idx in batch_indices(len(data), spec.batch_size, generator):
                x = augment(to_float(data.images[idx], device), spec.augment, generator)
                y = labels_tensor(data.labels[idx.numpy()], device, task)
                logits = model(x)
                loss = supervised_loss(logits, y, task).mean()
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                total_loss += float(loss.detach()) * len(idx)
                total_acc += batch_accuracy(logits.detach(), y, task) * len(idx)
                seen += len(idx)
                bar.advance()
            history.loss.append(total_loss / seen)
            history.accuracy.append(total_acc / seen)
            history.lr.append(optimizer.param_groups[0]["lr"])
            bar.note(f"loss {history.loss[-1]:.3f} acc {history.accuracy[-1]:.3f}")
            scheduler.step()
    model.eval()
    return history


def subset_noise_rate(data: Split, index: np.ndarray) -> float:
    """Share of corrupted labels among the samples ``index`` (0 when no noise was injected)."""
    return float(data.noise_mask[index].mean()) if len(index) else 0.0
