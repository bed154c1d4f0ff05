"""Smooth parameter averaging of the student (RoS-KD Eq. 1) and EMA, through the fused ``average_weights_`` op."""

from __future__ import annotations

import copy
from collections.abc import Iterable

import torch
from torch.optim.swa_utils import update_bn

from compressor import ops


class WeightAverager:
    """Keeps an averaged copy of a model: ``W_avg <- (W_avg * n + W) / (n + 1)`` (mean) or ``W_avg <- lerp(W, 1-d)``.

    Parameters and floating buffers are averaged in one fused call; integer buffers (batch counters) are copied.
    """

    def __init__(self, model: torch.nn.Module, mode: str = "mean", decay: float = 0.99):
        if mode not in ("mean", "ema"):
            raise ValueError(f"averaging mode must be 'mean' or 'ema', got {mode!r}")
        self.model = copy.deepcopy(model).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.mode, self.decay = mode, decay
        self.count = 0

    @staticmethod
    def _tensors(model: torch.nn.Module) -> list[torch.Tensor]:
        return [*model.parameters(), *model.buffers()]

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        """Fold the current weights of ``model`` into the average (the first update copies them)."""
        averaged, current = self._tensors(self.model), [t.detach() for t in self._tensors(model)]
        weight = 1.0 if self.count == 0 else (1.0 / (self.count + 1) if self.mode == "mean" else 1.0 - self.decay)
        ops.average_weights_(averaged, current, weight)
        self.count += 1

    def state_dict(self) -> dict:
        """The averaged weights and the number of models folded in (for a checkpoint)."""
        return {"model": {k: v.detach().to("cpu", copy=True) for k, v in self.model.state_dict().items()},
                "count": self.count}

    def load_state_dict(self, state: dict) -> None:
        """Continue from a ``state_dict()``: the same average, the same count."""
        self.model.load_state_dict(state["model"])
        self.count = int(state["count"])

    @torch.no_grad()
    def recompute_batchnorm(self, batches: Iterable[torch.Tensor]) -> None:
        """Re-estimate batch-norm running statistics of the averaged model on ``batches`` of inputs."""
        update_bn(batches, self.model)
        self.model.eval()
