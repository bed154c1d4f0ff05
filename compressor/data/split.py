"""Seeded train / val / test split for sources that come without one."""

from __future__ import annotations

import numpy as np
from sklearn.model_selection import train_test_split


def _stratify(labels: np.ndarray, index: np.ndarray) -> np.ndarray | None:
    """Class labels to stratify on, or None where stratification is impossible (multi-label, rare classes)."""
    if labels.ndim != 1:
        return None
    _, counts = np.unique(labels[index], return_counts=True)
    return labels[index] if counts.min() >= 2 else None


def split_indices(
    labels: np.ndarray, val_fraction: float, test_fraction: float, seed: int
) -> dict[str, np.ndarray]:
    """Stratified (where possible) split of ``range(len(labels))`` into train, val and test indices, seeded."""
    everything = np.arange(len(labels))
    rest, test = train_test_split(
        everything, test_size=test_fraction, random_state=seed, stratify=_stratify(labels, everything)
    )
    if val_fraction <= 0:
        return {"train": np.sort(rest), "val": np.array([], dtype=np.int64), "test": np.sort(test)}
    train, val = train_test_split(
        rest, test_size=val_fraction / (1 - test_fraction), random_state=seed + 1, stratify=_stratify(labels, rest)
    )
    return {"train": np.sort(train), "val": np.sort(val), "test": np.sort(test)}
