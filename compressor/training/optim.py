"""Optimiser and per-epoch learning-rate schedule from the spec."""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch

from compressor.spec.training import OptimizerSpec, ScheduleSpec


def build_optimizer(params: Iterable[torch.nn.Parameter], spec: OptimizerSpec) -> torch.optim.Optimizer:
    """SGD (momentum, nesterov), Adam or AdamW with the spec's learning rate and weight decay."""
    params = list(params)
    if spec.name == "sgd":
        return torch.optim.SGD(
            params, lr=spec.lr, momentum=spec.momentum, weight_decay=spec.weight_decay,
            nesterov=spec.nesterov and spec.momentum > 0,
        )
    if spec.name == "adam":
        return torch.optim.Adam(params, lr=spec.lr, weight_decay=spec.weight_decay)
    return torch.optim.AdamW(params, lr=spec.lr, weight_decay=spec.weight_decay)


def lr_factor(epoch: int, epochs: int, spec: ScheduleSpec) -> float:
    """Multiplier of the base learning rate during ``epoch`` (0-based): linear warm-up, then the schedule."""
    if epoch < spec.warmup_epochs:
        return (epoch + 1) / (spec.warmup_epochs + 1)
    if spec.name == "multistep":
        return spec.gamma ** sum(1 for m in spec.milestones if epoch >= m)
    if spec.name == "cosine":
        span = max(1, epochs - spec.warmup_epochs)
        return 0.5 * (1.0 + math.cos(math.pi * (epoch - spec.warmup_epochs) / span))
    return 1.0


def build_scheduler(
    optimizer: torch.optim.Optimizer, spec: ScheduleSpec, epochs: int
) -> torch.optim.lr_scheduler.LRScheduler:
    """A ``LambdaLR`` stepped once per epoch following ``lr_factor``."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda epoch: lr_factor(epoch, epochs, spec))
