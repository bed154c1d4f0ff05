"""Teacher weights for multi-teacher distillation, drawn per batch (RoS-KD's stochastic teacher importance)."""

from __future__ import annotations

import torch


def teacher_weights(kind: str, num_teachers: int, generator: torch.Generator, single_index: int = 0) -> torch.Tensor:
    """Weights ``[K]`` summing to one.

    * ``equal``: ``1 / K`` each (Baseline III; its KD gradient equals KL to the averaged teacher distribution).
    * ``exponential``: ``w_m ~ Exp(1)`` drawn anew each call (RoS-KD), normalised to sum to one so that the scale of
      the KD term does not grow with K (the paper's draws are unnormalised; normalising only rescales alpha).
    * ``single``: one-hot on teacher ``single_index`` (Baseline II).
    """
    if kind == "equal":
        return torch.full((num_teachers,), 1.0 / num_teachers)
    if kind == "exponential":
        draws = torch.empty(num_teachers).exponential_(1.0, generator=generator)
        return draws / draws.sum()
    if kind == "single":
        if not 0 <= single_index < num_teachers:
            raise ValueError(f"single teacher index {single_index} out of range for {num_teachers} teachers")
        return torch.nn.functional.one_hot(torch.tensor(single_index), num_teachers).float()
    raise ValueError(f"unknown teacher weighting {kind!r}; use equal, exponential or single")
