"""One streaming pass over the pixels: checks, the data set's window and the per-channel statistics.

Integer pixels are counted into one histogram per channel (256 or 65,536 bins), batch by batch, so memory does not
grow with the data set and everything follows exactly from the counts: the training split's minimum and maximum
(``window: auto``) and the mean and standard deviation of the windowed values ``w(v) = clip((v - low) / (high - low),
0, 1)``, i.e. ``mean = sum_v h[v] w(v) / n`` and ``std = sqrt((sum_v h[v] w(v)^2 - n mean^2) / (n - 1))``. Float
pixels (float ``.npz`` arrays) are summed in float64 instead; their windowed statistics need a second pass only when
the window clips some of them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from compressor.data.batches import batch_indices
from compressor.data.errors import DataError
from compressor.data.loader import pixel_batches
from compressor.data.stores import ImageStore, LazyStore
from compressor.data.types import pixel_dtype_name
from compressor.export.decode import PixelFormat

STATS_BATCH = 128
STD_FLOOR = 1e-3  # a constant channel would divide by zero inside the model


@dataclass
class PixelStats:
    """Window and per-channel statistics of the training split (windowed values, so in [0, 1])."""

    pixel_format: PixelFormat
    mean: list[float]
    std: list[float]


class _Accumulator:
    """Per-channel histogram (integers) or float64 sums (floats) of the pixels seen so far."""

    def __init__(self, channels: int, dtype: str):
        self.dtype, self.count = dtype, 0
        bins = {"uint8": 256, "uint16": 65536}.get(dtype)
        self.hist = np.zeros((channels, bins), dtype=np.int64) if bins else None
        self.low, self.high = np.inf, -np.inf
        self.sums = np.zeros((channels, 2), dtype=np.float64)

    def add(self, pixels: torch.Tensor) -> None:
        x = pixels.numpy()
        self.count += x.shape[0] * x.shape[2] * x.shape[3]
        if self.hist is not None:
            for c in range(x.shape[1]):
                self.hist[c] += np.bincount(x[:, c].reshape(-1), minlength=self.hist.shape[1])
            return
        flat = x.transpose(1, 0, 2, 3).reshape(x.shape[1], -1).astype(np.float64)
        self.low, self.high = min(self.low, float(flat.min())), max(self.high, float(flat.max()))
        self.sums += np.stack([flat.sum(1), (flat * flat).sum(1)], axis=1)

    def value_range(self) -> tuple[float, float]:
        if self.hist is not None:
            seen = np.flatnonzero(self.hist.sum(0))
            return float(seen[0]), float(seen[-1])
        return self.low, self.high

    def windowed_stats(self, window: tuple[float, float]) -> tuple[np.ndarray, np.ndarray] | None:
        """Mean and std of ``w(v)`` per channel, or None when floats were clipped (a second pass is needed)."""
        low, high = window
        n = self.count
        if self.hist is not None:
            w = np.clip((np.arange(self.hist.shape[1], dtype=np.float64) - low) / (high - low), 0.0, 1.0)
            first, second = self.hist @ w, self.hist @ (w * w)
        else:
            if self.low < low or self.high > high:
                return None
            first = (self.sums[:, 0] - n * low) / (high - low)
            second = (self.sums[:, 1] - 2 * low * self.sums[:, 0] + n * low * low) / (high - low) ** 2
        mean = first / n
        var = (second - n * mean * mean) / max(n - 1, 1)
        return mean, np.sqrt(np.maximum(var, 0.0))


def _pass(images: ImageStore, acc: _Accumulator | None, workers: int) -> None:
    for _, pixels in pixel_batches(images, batch_indices(len(images), STATS_BATCH, None), workers):
        if acc is not None:
            acc.add(pixels)


def _choose_window(window: object, dtype: str, value_range: tuple[float, float], where: str) -> PixelFormat:
    low, high = value_range
    if window == "type":
        if dtype == "float32" and (low < 0.0 or high > 1.0):
            raise DataError(f"{where}: float pixels span {low:.6g}..{high:.6g}, outside [0, 1]; set data.window to "
                            "auto (the training split's range) or [low, high]")
        return PixelFormat.type_range(dtype)
    if window == "auto":
        if not low < high:
            raise DataError(f"{where}: every pixel of the training split is {low:g}; data.window: auto needs a range")
        return PixelFormat(dtype, (low, high))
    return PixelFormat(dtype, tuple(float(v) for v in window))


def pixel_statistics(
    train: ImageStore, others: list[ImageStore], window: object, where: str, workers: int = 0
) -> PixelStats:
    """Read every image once: ``train`` for the statistics, ``others`` (val, test) to check that they decode.

    Args:
        train: the training split's images.
        others: the other splits' images, read through when reading can fail (``LazyStore.needs_check``; tensors
            were checked when they were loaded) or when float pixels must be range-checked.
        window: ``"type"``, ``"auto"`` or ``(low, high)`` (``data.window``).
        where: how messages name the data set.
        workers: ``DataLoader`` worker processes.

    Raises:
        DataError: a pixel or file that cannot be used, or a window that does not fit the pixels.
    """
    dtype = pixel_dtype_name(train)
    acc = _Accumulator(int(train.shape[1]), dtype)
    _pass(train, acc, workers)
    low, high = acc.value_range()
    check_range = dtype == "float32" and window == "type"  # float pixels outside [0, 1] anywhere refuse it
    for images in others:
        if (isinstance(images, LazyStore) and images.needs_check) or check_range:
            other = _Accumulator(int(images.shape[1]), dtype) if check_range else None
            _pass(images, other, workers)
            if other is not None and other.count:
                low, high = min(low, other.low), max(high, other.high)
    fmt = _choose_window(window, dtype, (low, high), where)
    stats = acc.windowed_stats(fmt.window)
    if stats is None:  # floats clipped by an explicit window: average the windowed values in a second pass
        clipped = _Accumulator(int(train.shape[1]), dtype)
        for _, pixels in pixel_batches(train, batch_indices(len(train), STATS_BATCH, None), workers):
            clipped.add(torch.from_numpy(fmt.to_unit(pixels.numpy())))
        stats = clipped.windowed_stats((0.0, 1.0))
    mean, std = stats
    return PixelStats(fmt, [round(float(v), 6) for v in mean], [round(float(max(v, STD_FLOOR)), 6) for v in std])
