"""Soft-randomization (Arani et al., section 4.2): the student learns on noisy inputs from a teacher on clean ones.

Loss: ``(1 - alpha) CE(S(x + d), y) + alpha tau^2 KL(T_tau(x) || S_tau(x + d))``, ``d ~ N(0, sigma^2)``. The
hook gives the teachers ``x`` and the learners ``soft_randomize(x)`` (both terms). Pixels are in [0, 1] and are not
clipped after the noise, as in the paper's Gaussian formulation. Spec: ``distillation.soft_randomization.sigma``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from compressor.methods.registry import MethodContext, register_method
from compressor.training.hooks import Batch, Hook


def soft_randomize(x: Tensor, sigma: float, generator: torch.Generator) -> Tensor:
    """``x + sigma * N(0, 1)`` elementwise, drawn from the CPU ``generator``."""
    return x + sigma * torch.randn(x.shape, generator=generator).to(device=x.device, dtype=x.dtype)


class SoftRandomization(Hook):
    """Gives the learners the batch's input with Gaussian noise of ``sigma`` (drawn from the loop's generator)."""

    def __init__(self, sigma: float):
        self.sigma = sigma

    def on_batch(self, loop, batch: Batch) -> None:
        batch.inputs = soft_randomize(batch.x, self.sigma, loop.generator)


@register_method("soft_randomization", order=20, builtin=True)
def _soft_randomization(ctx: MethodContext, params: dict) -> Hook | None:
    sigma = ctx.distill.soft_randomization.sigma if ctx.distill is not None else 0.0
    return SoftRandomization(sigma) if sigma > 0 else None
