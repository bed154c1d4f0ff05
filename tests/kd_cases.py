"""Shared cases for the fused-op tests: shapes, random inputs and dtype tolerances.

Every implementation is compared against ``compressor.reference`` on fresh random inputs built here.
"""

from __future__ import annotations

import itertools
import math

import torch

KS = (1, 2, 5, 8)
CS = (1, 2, 7, 100, 1000, 5000)
BS = (3, 8)  # odd and even row counts
MODES = ("multiclass", "multilabel")

# (atol, rtol) per input dtype, applied to loss, entropy and gradient. Low-precision inputs are upcast to fp32
# inside the kernels, so the residual error comes from reading rounded inputs identically: tolerances stay tight.
TOLERANCES = {
    torch.float64: (1e-10, 1e-8),
    torch.float32: (2e-5, 2e-4),
    torch.bfloat16: (2e-3, 2e-3),
    torch.float16: (1e-3, 1e-3),
}


def shape_cases() -> list[tuple[int, int, int]]:
    """(K, B, C) covering every K and C, each with an odd and an even B across the list."""
    cases = []
    for i, (k, c) in enumerate(itertools.product(KS, CS)):
        cases.append((k, BS[i % 2], c))
    return cases


def option_cases() -> list[tuple[str, bool, bool, bool]]:
    """(mode, gate_on, weights_2d, renormalize): every combination."""
    return list(itertools.product(MODES, (False, True), (False, True), (False, True)))


def make_inputs(
    k: int,
    b: int,
    c: int,
    *,
    dtype: torch.dtype = torch.float32,
    weights_2d: bool = False,
    device: str | torch.device = "cpu",
    seed: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random (student[B,C], teachers[K,B,C], weights[K] or [K,B]) with varied logit scales per teacher row.

    A fresh seed is drawn when ``seed`` is None, so every test run sees new inputs.
    """
    gen = torch.Generator().manual_seed(seed if seed is not None else torch.seed() % (2**31))
    student = torch.randn(b, c, generator=gen) * 2.0
    # Per-row scales spread teacher entropies from confident (large scale) to flat (small scale).
    scales = torch.rand(k, b, 1, generator=gen) * 6.0 + 0.1
    teachers = torch.randn(k, b, c, generator=gen) * scales
    weights = torch.rand(k, b, generator=gen) if weights_2d else torch.rand(k, generator=gen)
    weights = weights + 0.05
    return (
        student.to(device=device, dtype=dtype),
        teachers.to(device=device, dtype=dtype),
        weights.to(device=device, dtype=torch.float32 if dtype != torch.float64 else torch.float64),
    )


def gate_for(entropy: torch.Tensor, gate_on: bool) -> float:
    """A gate threshold that keeps roughly half of the teacher rows (``inf`` when the gate is off).

    The threshold sits midway between two neighbouring sorted entropies, so rounding cannot flip a keep decision.
    """
    if not gate_on:
        return math.inf
    values = entropy.flatten().double().sort().values
    if values.numel() < 2:
        return float(values[0]) + 1e-3
    mid = values.numel() // 2
    return float((values[mid - 1] + values[mid]) / 2)
