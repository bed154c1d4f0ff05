"""Messy collaboration (Arani et al., section 4.3): deliberate target variability, drawn anew for every batch.

With rate ``r``, each sample's target in the batch is replaced by a class drawn uniformly from the *other* classes
(never the given label). Applied while training the teachers it is MC-T, while distilling the student MC-S, both
MC-TS. Multi-label targets have no single class to replace; each 0/1 entry is flipped with probability ``r``.
The corruption is on top of whatever noise the data set's labels already carry.

Spec: ``teachers.messy.rate`` (MC-T) and ``distillation.messy.rate`` (MC-S). The history logs ``messy_rate``, the
share of targets changed.
"""

from __future__ import annotations

import torch
from torch import Tensor

from compressor.methods.registry import MethodContext, register_method
from compressor.task import Task
from compressor.training.hooks import Batch, Hook


def messy_targets(
    targets: Tensor, num_classes: int, rate: float, task: Task, generator: torch.Generator
) -> tuple[Tensor, Tensor]:
    """Return ``(corrupted_targets, changed[B] bool)``.

    Args:
        targets: ``int64 [B]`` class indices or ``float [B, L]`` 0/1 multi-label targets.
        num_classes: number of classes ``C`` (multiclass).
        rate: probability that a sample's target is corrupted (per entry for multi-label).
        task: what the targets are (multi-label entries are flipped one by one).
        generator: CPU generator of the corruption draws.
    """
    device = targets.device
    if task.multilabel:
        flips = (torch.rand(targets.shape, generator=generator) < rate).to(device)
        return torch.where(flips, 1.0 - targets, targets), flips.any(dim=1)
    if num_classes < 2:
        return targets, torch.zeros(targets.shape[0], dtype=torch.bool, device=device)
    corrupt = (torch.rand(targets.shape[0], generator=generator) < rate).to(device)
    # An offset in 1..C-1 moves the label to a uniformly drawn *incorrect* class.
    offsets = torch.randint(1, num_classes, targets.shape, generator=generator).to(device)
    return torch.where(corrupt, (targets + offsets) % num_classes, targets), corrupt


class MessyCollaboration(Hook):
    """Corrupts each batch's targets at ``rate`` (drawn from the loop's generator) and logs the share changed."""

    def __init__(self, rate: float, num_classes: int, task: Task):
        self.rate, self.num_classes, self.task = rate, num_classes, task

    def on_batch(self, loop, batch: Batch) -> None:
        batch.targets, batch.extra["corrupted"] = messy_targets(batch.labels, self.num_classes, self.rate, self.task,
                                                                loop.generator)

    def loss(self, loop, index, batch, outputs, rows):
        loop.learners[index].log(corrupted=float(batch.extra["corrupted"].sum()))
        return rows

    def epoch_figures(self, loop, index) -> dict[str, float]:
        return {"messy_rate": loop.learners[index].mean("corrupted")}


@register_method("messy", order=10, builtin=True)
def _messy(ctx: MethodContext, params: dict) -> Hook | None:
    return MessyCollaboration(ctx.messy_rate, ctx.num_classes, ctx.task) if ctx.messy_rate > 0 else None
