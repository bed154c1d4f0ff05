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


def teacher_weights(kind: str, num_teachers: int, generator: torch.Generator, single_index: int = 0,
                    normalise: bool = True) -> torch.Tensor:
    """Weights ``[K]``.

    * ``equal``: ``1 / K`` each (Baseline III; its KD gradient equals KL to the averaged teacher distribution).
    * ``exponential``: ``w_m ~ Exp(1)`` drawn anew each call (RoS-KD). ``normalise=True`` divides them by their sum
      (weights summing to one: the KD term keeps the scale of one teacher whatever K). ``normalise=False`` uses the
      draws as they are, as the paper does: their sum has mean K, so the KD term weighs about K times an average
      teacher's KL, and its scale changes from batch to batch.
    * ``single``: one-hot on teacher ``single_index`` (Baseline II).
    """
    if kind == "equal":
        return torch.full((num_teachers,), 1.0 / num_teachers)
    if kind == "exponential":
        draws = torch.empty(num_teachers).exponential_(1.0, generator=generator)
        return draws / draws.sum() if normalise else draws
    if not 0 <= single_index < num_teachers:  # single (the spec's Literal admits no other kind here)
        raise ValueError(f"single teacher index {single_index} out of range for {num_teachers} teachers")
    return torch.nn.functional.one_hot(torch.tensor(single_index), num_teachers).float()


def exponential_sample_weights(num_teachers: int, batch: int, generator: torch.Generator,
                               normalise: bool = True) -> Tensor:
    """``[K, B]`` weights: one ``Exp(1)`` draw per teacher and sample (``normalise``: divided by their sum over the
    teachers, per sample)."""
    draws = torch.empty(num_teachers, batch).exponential_(1.0, generator=generator)
    return draws / draws.sum(0, keepdim=True) if normalise else draws


def batch_teacher_weights(
    spec: DistillSpec, teacher_logits: Tensor, labels: Tensor, task: Task, generator: torch.Generator
) -> Tensor:
    """The weights ``[K]`` or ``[K, B]`` of one batch under ``spec.weighting`` / ``weight_draw`` / ``weight_scale``.

    Args:
        spec: the distillation spec.
        teacher_logits: ``[K, B, C]`` logits of the batch (adaptive weights read them).
        labels: the batch's given (noisy) labels (adaptive weights read them).
        task: what the models predict.
        generator: source of the exponential draws.
    """
    k, b, _ = teacher_logits.shape
    device = teacher_logits.device
    if spec.weighting == "adaptive":
        return adaptive_weights(teacher_logits, labels, task, spec.adaptive_temperature)
    normalise = spec.weight_scale == "normalised"
    if spec.weighting == "exponential" and spec.weight_draw == "sample":
        return exponential_sample_weights(k, b, generator, normalise).to(device)
    return teacher_weights(spec.weighting, k, generator, spec.single_teacher, normalise).to(device)


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
