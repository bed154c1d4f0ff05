"""Smooth parameter averaging of the student (RoS-KD Eq. 1) and EMA, through the fused ``average_weights_`` op.

Spec: ``distillation.averaging``. After ``warmup_epochs`` epochs, each epoch's student weights are folded into the
averaged student; after training its batch-norm statistics are recomputed on the training images (rank 0 alone in
a distributed run). A warm-up longer than training averages the final weights alone.
"""

from __future__ import annotations

import copy

import torch
from torch.optim.swa_utils import update_bn

from compressor import ops
from compressor.data.batches import iterate_inputs
from compressor.data.types import Split
from compressor.methods.registry import MethodContext, register_method
from compressor.spec.training import AveragingSpec
from compressor.training.checkpointing import cpu_copy
from compressor.training.hooks import Hook


class WeightAverager:
    """Keeps an averaged copy of a model: ``W_avg <- (W_avg * n + W) / (n + 1)`` (mean) or ``W_avg <- lerp(W, 1-d)``.

    Parameters and floating buffers are averaged in one fused call; integer buffers (batch counters) are copied.
    """

    def __init__(self, model: torch.nn.Module, mode: str = "mean", decay: float = 0.99):
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
        return {"model": cpu_copy(self.model.state_dict()), "count": self.count}

    def load_state_dict(self, state: dict) -> None:
        """Continue from a ``state_dict()``: the same average, the same count."""
        self.model.load_state_dict(state["model"])
        self.count = int(state["count"])


class ParameterAveraging(Hook):
    """Keeps ``averager``, the average of the main learner's weights over the epochs after the warm-up."""

    def __init__(self, spec: AveragingSpec, model: torch.nn.Module, data: Split, batch_size: int,
                 device: torch.device | str):
        self.spec, self.model, self.data, self.batch_size, self.device = spec, model, data, batch_size, device
        self.averager: WeightAverager | None = None

    def _fold(self) -> None:
        self.averager = self.averager or WeightAverager(self.model, self.spec.mode, self.spec.decay)
        self.averager.update(self.model)

    def on_epoch_end(self, loop) -> None:
        if loop.epoch >= self.spec.warmup_epochs:
            self._fold()

    def on_fit_end(self, loop) -> None:
        if self.averager is None:  # warm-up longer than training: the average is the final weights
            self._fold()
        if self.spec.recompute_batchnorm and loop.dist.is_main:  # batch-norm statistics re-estimated, eval mode kept
            update_bn(iterate_inputs(self.data.images, self.batch_size, self.device, self.data.window),
                      self.averager.model)

    def state_dict(self) -> dict | None:
        return None if self.averager is None else self.averager.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.averager = WeightAverager(self.model, self.spec.mode, self.spec.decay)
        self.averager.load_state_dict(state)


@register_method("averaging", order=80, builtin=True)
def _averaging(ctx: MethodContext, params: dict) -> Hook | None:
    if ctx.distill is None or not ctx.distill.averaging.enabled:
        return None
    return ParameterAveraging(ctx.distill.averaging, ctx.learners[0].model, ctx.data, ctx.train.batch_size,
                              ctx.device)
