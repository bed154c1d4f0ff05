"""Overlapping training subsets, one per teacher (RoS-KD).

Formula, for N training samples, k subsets and overlap ratio p in [0, 1]: a seeded permutation of the samples is
cut into a shared core of ``round(p * N)`` samples and k near-equal disjoint parts of the remaining samples.
Subset i is the core plus part i. So

* every sample is in at least one subset (the core in all k, each other sample in exactly one);
* any two subsets share exactly the core: ``|D_i & D_j| = round(p * N)``;
* ``|D_i| ~= p * N + (1 - p) * N / k``;
* p = 0 gives disjoint subsets, p = 1 gives k identical subsets equal to the whole training set.
"""

from __future__ import annotations

import numpy as np


def overlapping_subsets(num_samples: int, count: int, overlap: float, seed: int) -> list[np.ndarray]:
    """Sorted index arrays of the ``count`` subsets (see the module docstring for the formula)."""
    if count < 1:
        raise ValueError("count must be >= 1")
    if not 0.0 <= overlap <= 1.0:
        raise ValueError(f"overlap must lie in [0, 1], got {overlap}")
    order = np.random.default_rng(seed).permutation(num_samples)
    core_size = int(round(overlap * num_samples))
    core, rest = order[:core_size], order[core_size:]
    parts = np.array_split(rest, count)
    return [np.sort(np.concatenate([core, part])) for part in parts]
