"""Noise on the teachers' supervision while distilling (Arani et al., noise in KD: section 4.1, appendix A.2).

* Fickle teacher: a teacher trained with dropout keeps dropout active while distilling, so the same input gets a
  different supervision signal each time (``TeacherLogits(fickle=True)`` in ``compressor.training.teacher_logits``).
* Signal-dependent noise: ``z' = (1 + d) * z`` with ``d ~ N(0, sigma^2)`` drawn independently for every logit, so
  the noise variance ``sigma^2 z^2`` grows with the logit's magnitude.
* Random swapping: with probability ``p`` the logits of two classes whose softened probabilities
  ``softmax(z / tau)`` differ by less than a threshold are exchanged; ``top2`` considers the two highest classes,
  ``all`` every disjoint consecutive pair in rank order (ranks 1-2, 3-4, ...), each pair drawn independently.
  Swapping logits swaps the softened outputs exactly (softmax is permutation-equivariant).

Spec: ``distillation.teacher_noise``. The noise and the swaps act on each batch's teacher logits, after the teachers
(or their view pool, which stores the logits whole when teacher noise is on) and before the teacher weights.
"""

from __future__ import annotations

import torch
from torch import Tensor

from compressor.methods.registry import MethodContext, register_method
from compressor.spec.methods import TeacherNoiseSpec
from compressor.training.hooks import Batch, Hook


def signal_dependent_noise(logits: Tensor, sigma: float, generator: torch.Generator) -> Tensor:
    """``logits * (1 + d)``, ``d ~ N(0, sigma^2)`` per element (returns ``logits`` itself when ``sigma == 0``)."""
    if sigma == 0:
        return logits
    return logits * (1.0 + sigma * torch.randn(logits.shape, generator=generator).to(logits))


def swap_softened_outputs(
    logits: Tensor, how: str, probability: float, threshold: float, temperature: float, generator: torch.Generator
) -> Tensor:
    """Swap the logits of near-tied class pairs (see the module docstring) along the last dimension.

    Args:
        logits: ``[..., C]`` logits (any leading shape, e.g. ``[K, B, C]``).
        how: ``"top2"`` or ``"all"`` (``"none"`` returns ``logits``).
        probability: chance that an eligible pair is swapped.
        threshold: a pair is eligible when its softened probabilities differ by less than this.
        temperature: ``tau`` of the softened outputs ``softmax(z / tau)``.
        generator: source of the swap decisions.
    """
    if how == "none" or probability == 0:
        return logits
    num_classes = logits.shape[-1]
    if num_classes < 2:
        return logits
    ranked, order = logits.sort(dim=-1, descending=True)
    pairs = 1 if how == "top2" else num_classes // 2
    first, second = ranked[..., 0 : 2 * pairs : 2], ranked[..., 1 : 2 * pairs : 2]
    softened = torch.softmax(ranked / temperature, dim=-1)
    gap = softened[..., 0 : 2 * pairs : 2] - softened[..., 1 : 2 * pairs : 2]  # >= 0: ranks are descending
    swap = (gap < threshold) & (torch.rand(gap.shape, generator=generator).to(logits.device) < probability)
    swapped = ranked.clone()
    swapped[..., 0 : 2 * pairs : 2] = torch.where(swap, second, first)
    swapped[..., 1 : 2 * pairs : 2] = torch.where(swap, first, second)
    return torch.empty_like(logits).scatter_(-1, order, swapped)


class TeacherNoise(Hook):
    """Perturbs each batch's teacher logits as ``spec`` says: signal-dependent noise, then random swapping (each a
    no-op when switched off; draws from the loop's generator)."""

    def __init__(self, spec: TeacherNoiseSpec, temperature: float):
        self.spec, self.temperature = spec, temperature

    def on_batch(self, loop, batch: Batch) -> None:
        spec = self.spec
        logits = signal_dependent_noise(batch.knowledge.logits, spec.logit_noise, loop.generator)
        batch.knowledge.logits = swap_softened_outputs(logits, spec.swap, spec.swap_probability, spec.swap_threshold,
                                                       self.temperature, loop.generator)


@register_method("teacher_noise", order=40, builtin=True)
def _teacher_noise(ctx: MethodContext, params: dict) -> Hook | None:
    if ctx.teacher_source is None:
        return None
    spec = ctx.distill.teacher_noise
    return TeacherNoise(spec, ctx.distill.temperature) if spec.logit_noise > 0 or spec.swap != "none" else None
