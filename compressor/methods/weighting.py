"""Teacher weights for multi-teacher distillation: fixed, drawn per batch or per sample, or adaptive per sample.

Spec: ``distillation.weighting`` (and ``weight_draw``, ``weight_scale``, ``adaptive_temperature``,
``single_teacher``). The weights of
each batch are drawn after the teacher noise, from the loop's generator.
"""

from __future__ import annotations

import torch
from torch import Tensor

from compressor.methods.adaptive import adaptive_weights
from compressor.methods.registry import MethodContext, register_method
from compressor.spec.training import DistillSpec
from compressor.task import Task
from compressor.training.hooks import Batch, Hook


def batch_teacher_weights(
    spec: DistillSpec, teacher_logits: Tensor, labels: Tensor, task: Task, generator: torch.Generator
) -> Tensor:
    """The weights ``[K]`` or ``[K, B]`` of one batch under ``spec.weighting`` / ``weight_draw`` / ``weight_scale``.

    * ``equal``: ``1 / K`` each (Baseline III; its KD gradient equals KL to the averaged teacher distribution).
    * ``exponential``: ``w_m ~ Exp(1)`` drawn anew each batch (RoS-KD), or per teacher and sample ``[K, B]``
      (``weight_draw: sample``). ``weight_scale: normalised`` divides them by their sum over the teachers (weights
      summing to one: the KD term keeps the scale of one teacher whatever K). ``raw`` uses the draws as they are, as
      the paper does: their sum has mean K, so the KD term weighs about K times an average teacher's KL, and its
      scale changes from batch to batch.
    * ``single``: one-hot on teacher ``single_teacher`` (Baseline II; the spec keeps it below K).
    * ``adaptive``: each teacher's confidence in the given labels (``compressor.methods.adaptive``).

    Args:
        spec: the distillation spec.
        teacher_logits: ``[K, B, C]`` logits of the batch (adaptive weights read them).
        labels: the batch's given (noisy) labels (adaptive weights read them).
        task: what the models predict.
        generator: source of the exponential draws.
    """
    k, b, _ = teacher_logits.shape
    if spec.weighting == "adaptive":
        return adaptive_weights(teacher_logits, labels, task, spec.adaptive_temperature)
    if spec.weighting == "equal":
        weights = torch.full((k,), 1.0 / k)
    elif spec.weighting == "single":
        weights = torch.nn.functional.one_hot(torch.tensor(spec.single_teacher), k).float()
    else:  # exponential
        draws = torch.empty((k, b) if spec.weight_draw == "sample" else (k,)).exponential_(1.0, generator=generator)
        weights = draws / draws.sum(0, keepdim=True) if spec.weight_scale == "normalised" else draws
    return weights.to(teacher_logits.device)


class TeacherWeighting(Hook):
    """Sets each batch's teacher weights ``[K]`` or ``[K, B]`` under ``spec.weighting``."""

    def __init__(self, spec: DistillSpec, task: Task):
        self.spec, self.task = spec, task

    def on_batch(self, loop, batch: Batch) -> None:
        knowledge = batch.knowledge
        knowledge.weights = batch_teacher_weights(self.spec, knowledge.logits, batch.labels, self.task, loop.generator)


@register_method("weighting", order=50, builtin=True)
def _weighting(ctx: MethodContext, params: dict) -> Hook | None:
    return TeacherWeighting(ctx.distill, ctx.task) if ctx.teacher_source is not None else None
