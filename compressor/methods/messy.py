"""Messy collaboration (Arani et al., section 4.3): deliberate target variability, drawn anew for every batch.

With rate ``r``, each sample's target in the batch is replaced by a class drawn uniformly from the *other* classes
(never the given label). Applied while training the teachers it is MC-T, while distilling the student MC-S, both
MC-TS. Multi-label targets have no single class to replace; each 0/1 entry is flipped with probability ``r``.
The corruption is on top of whatever noise the data set's labels already carry.
"""

from __future__ import annotations

import torch
from torch import Tensor

from compressor.task import Task


def messy_targets(
    targets: Tensor, num_classes: int, rate: float, task: Task, generator: torch.Generator
) -> tuple[Tensor, Tensor]:
    """Return ``(corrupted_targets, changed[B] bool)``; with ``rate == 0`` the targets come back untouched.

    Args:
        targets: ``int64 [B]`` class indices or ``float [B, L]`` 0/1 multi-label targets.
        num_classes: number of classes ``C`` (multiclass).
        rate: probability that a sample's target is corrupted (per entry for multi-label).
        task: what the targets are (multi-label entries are flipped one by one).
        generator: CPU generator of the corruption draws.
    """
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"messy collaboration rate must lie in [0, 1), got {rate}")
    if rate == 0.0:
        return targets, torch.zeros(targets.shape[0], dtype=torch.bool, device=targets.device)
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
