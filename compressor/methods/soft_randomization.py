"""Soft-randomization (Arani et al., section 4.2): the student learns on noisy inputs from a teacher on clean ones.

Loss: ``(1 - alpha) CE(S(x + d), y) + alpha tau^2 KL(T_tau(x) || S_tau(x + d))``, ``d ~ N(0, sigma^2)``. The
distillation loop feeds ``x`` to the teachers and ``soft_randomize(x)`` to the student (both terms). Pixels are in
[0, 1] and are not clipped after the noise, as in the paper's Gaussian formulation.
"""

from __future__ import annotations

import torch
from torch import Tensor


def soft_randomize(x: Tensor, sigma: float, generator: torch.Generator) -> Tensor:
    """``x + sigma * N(0, 1)`` elementwise, drawn from the CPU ``generator`` (``x`` itself when ``sigma == 0``)."""
    if sigma < 0:
        raise ValueError(f"soft-randomization sigma must be >= 0, got {sigma}")
    if sigma == 0:
        return x
    return x + sigma * torch.randn(x.shape, generator=generator).to(device=x.device, dtype=x.dtype)
