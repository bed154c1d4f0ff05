"""Overlapping training subsets, one per teacher (RoS-KD), in two layouts.

For N training samples, k subsets and overlap ratio p in [0, 1], a seeded permutation of the samples is cut into k
near-equal disjoint *shares* S_1..S_k (share i is owned by teacher i). Then:

``random`` (default): subset i is its share S_i plus every sample of the other shares, each taken independently
with probability p (one draw per sample and teacher). So

* ``E|D_i| = N/k + p (N - N/k) = p N + (1 - p) N / k``;
* a sample is in its owner's subset and in each other subset with probability p: it is seen by ``1 + p (k - 1)``
  teachers on average and left out by ``(1 - p)(k - 1)``, so every sample has out-of-sample teachers (for k = 5,
  p = 0.4: seen by 2.6 teachers, unseen by 2.4); two subsets share ``2 p N / k + p^2 (N - 2 N / k)`` samples on
  average.

``shared_core``: the first ``round(p N)`` samples of the permutation form a core that is in every subset, the rest
is cut into k near-equal disjoint parts, and subset i is the core plus part i. So

* ``|D_i| ~= p N + (1 - p) N / k`` (the same size as ``random`` on average);
* any two subsets share exactly the core, ``round(p N)`` samples, which every teacher sees: on the core no
  teacher's prediction is out of sample.

In both layouts every sample is in at least one subset, p = 0 gives disjoint subsets and p = 1 gives k identical
subsets equal to the whole training set.
"""

from __future__ import annotations

import numpy as np

LAYOUTS = ("random", "shared_core")


def overlapping_subsets(
    num_samples: int, count: int, overlap: float, seed: int, layout: str = "random"
) -> list[np.ndarray]:
    """Sorted index arrays of the ``count`` subsets (see the module docstring for both layouts' formulas).

    Args:
        num_samples: size N of the training set.
        count: number of subsets k (one per teacher).
        overlap: overlap ratio p in [0, 1].
        seed: seed of the permutation (and of the inclusion draws of the ``random`` layout).
        layout: ``random`` or ``shared_core``.

    Raises:
        ValueError: ``count < 1``, ``overlap`` outside [0, 1] or an unknown layout.
    """
    if count < 1:
        raise ValueError("count must be >= 1")
    if not 0.0 <= overlap <= 1.0:
        raise ValueError(f"overlap must lie in [0, 1], got {overlap}")
    if layout not in LAYOUTS:
        raise ValueError(f"unknown subset layout {layout!r}; use one of {', '.join(LAYOUTS)}")
    rng = np.random.default_rng(seed)
    order = rng.permutation(num_samples)
    if layout == "shared_core":
        core_size = int(round(overlap * num_samples))
        core, rest = order[:core_size], order[core_size:]
        return [np.sort(np.concatenate([core, part])) for part in np.array_split(rest, count)]
    owner = np.empty(num_samples, dtype=np.int64)
    for i, share in enumerate(np.array_split(order, count)):
        owner[share] = i
    # one uniform draw per (sample, teacher): sample j joins subset i when i owns it or its draw falls below p
    # (p = 1 takes every sample, p = 0 none beyond the share)
    member = (rng.random((num_samples, count)) < overlap) | (owner[:, None] == np.arange(count)[None, :])
    return [np.flatnonzero(member[:, i]) for i in range(count)]
