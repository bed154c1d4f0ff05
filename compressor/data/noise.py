"""Synthetic label noise for benchmarking: symmetric, pair-flip and a user-given transition matrix.

Each label is corrupted independently with probability ``rate`` (symmetric, pair-flip) or drawn from its row of
the transition matrix, so the realised noise rate fluctuates around the nominal one; the mask of corrupted labels
is returned and saved so every later figure can report the noise each model really saw.
"""

from __future__ import annotations

import numpy as np

from compressor.data.errors import DataError


def symmetric_noise(labels: np.ndarray, num_classes: int, rate: float, rng: np.random.Generator) -> np.ndarray:
    """With probability ``rate`` replace a label by a class drawn uniformly from the *other* classes.

    Multi-label targets (``[N, L]``) flip each 0/1 entry independently with probability ``rate``.
    """
    if labels.ndim == 2:
        flips = rng.random(labels.shape) < rate
        return np.where(flips, 1.0 - labels, labels).astype(labels.dtype)
    if num_classes < 2:
        return labels.copy()
    corrupt = rng.random(len(labels)) < rate
    offsets = rng.integers(1, num_classes, size=len(labels))  # 1..C-1: never the true class
    return np.where(corrupt, (labels + offsets) % num_classes, labels).astype(labels.dtype)


def pairflip_noise(labels: np.ndarray, num_classes: int, rate: float, rng: np.random.Generator) -> np.ndarray:
    """With probability ``rate`` move a label to the adjacent class ``(y + 1) mod C`` (CMD's pair-flip)."""
    if labels.ndim == 2:
        raise DataError("pair-flip noise is defined for single-label tasks only; use symmetric for multi-label")
    corrupt = rng.random(len(labels)) < rate
    return np.where(corrupt, (labels + 1) % num_classes, labels).astype(labels.dtype)


def matrix_noise(labels: np.ndarray, matrix: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Draw each noisy label from row ``y`` of the row-stochastic transition matrix ``T[y, :]``."""
    if labels.ndim == 2:
        raise DataError("a transition matrix applies to single-label tasks only")
    cumulative = np.cumsum(matrix, axis=1)
    draws = rng.random(len(labels))
    noisy = (draws[:, None] > cumulative[labels]).sum(axis=1)
    return np.minimum(noisy, matrix.shape[0] - 1).astype(labels.dtype)


def inject_noise(
    labels: np.ndarray, num_classes: int, kind: str, rate: float, matrix: list[list[float]] | None, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(noisy_labels, mask)``; ``mask[i]`` is True where sample i's label was changed.

    Raises:
        DataError: the noise kind does not fit the task (e.g. a matrix of the wrong size).
    """
    rng = np.random.default_rng(seed)
    if kind == "none" or (kind != "matrix" and rate == 0):
        noisy = labels.copy()
    elif kind == "symmetric":
        noisy = symmetric_noise(labels, num_classes, rate, rng)
    elif kind == "pairflip":
        noisy = pairflip_noise(labels, num_classes, rate, rng)
    else:  # matrix (the spec admits no other kind)
        array = np.asarray(matrix, dtype=np.float64)
        if array.shape != (num_classes, num_classes):
            raise DataError(f"noise.matrix is {array.shape[0]}x{array.shape[1]} but the data has {num_classes} classes")
        noisy = matrix_noise(labels, array, rng)
    mask = (noisy != labels).any(axis=1) if labels.ndim == 2 else noisy != labels
    return noisy, mask
