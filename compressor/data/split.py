"""Seeded train / val / test split for sources that come without one."""

from __future__ import annotations

import numpy as np
from sklearn.model_selection import train_test_split

from compressor.data.errors import DataError


def _stratify(labels: np.ndarray, index: np.ndarray) -> np.ndarray | None:
    """Class labels to stratify on, or None where stratification is impossible (multi-label, rare classes)."""
    if labels.ndim != 1:
        return None
    _, counts = np.unique(labels[index], return_counts=True)
    return labels[index] if counts.min() >= 2 else None


def _split(index: np.ndarray, size: float, seed: int, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``train_test_split`` stratified where it can be (every class needs a place on both sides), else plain."""
    try:
        return train_test_split(index, test_size=size, random_state=seed, stratify=_stratify(labels, index))
    except ValueError:  # too few samples of some class for the part's size: split without stratification
        try:
            return train_test_split(index, test_size=size, random_state=seed)
        except ValueError as exc:
            raise DataError(f"{len(index)} samples cannot be split into parts of {size:g} ({exc})") from None


def split_indices(
    labels: np.ndarray, val_fraction: float, test_fraction: float, seed: int
) -> dict[str, np.ndarray]:
    """Stratified (where possible) split of ``range(len(labels))`` into train, val and test indices, seeded.

    Raises:
        DataError: too few samples for the fractions.
    """
    everything = np.arange(len(labels))
    rest, test = _split(everything, test_fraction, seed, labels)
    if val_fraction <= 0:
        return {"train": np.sort(rest), "val": np.array([], dtype=np.int64), "test": np.sort(test)}
    train, val = _split(rest, val_fraction / (1 - test_fraction), seed + 1, labels)
    return {"train": np.sort(train), "val": np.sort(val), "test": np.sort(test)}
