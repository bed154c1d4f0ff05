"""Data containers shared by the pipeline."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from compressor.data.stores import ImageStore, take
from compressor.export.decode import PixelFormat
from compressor.task import Task

__all__ = ["DataBundle", "Split", "pixel_dtype_name"]


def pixel_dtype_name(images: ImageStore) -> str:
    """``uint8``, ``uint16`` or ``float32``: the pixel type of a store or tensor."""
    return str(images.dtype).removeprefix("torch.")


@dataclass
class Split:
    """One split of a data set.

    Attributes:
        images: ``[N, C, H, W]`` integer pixels (``uint8`` or ``uint16``; ``float32`` for float arrays): a tensor in
            memory, or a store that reads them on demand (``compressor.data.stores``). Either way ``images[idx]``
            (an index tensor, array or slice) is a ``[n, C, H, W]`` tensor; ``compressor.data.to_model_input``
            maps it to the model's [0, 1] input with the data set's window.
        labels: ``int64 [N]`` class indices (multiclass) or ``float32 [N, L]`` 0/1 labels (multilabel).
        groups: optional ``int64 [N]`` group (domain) labels.
        clean_labels: the labels before synthetic noise was injected (None where no noise was injected).
        pixel_format: the data set's pixel type and window (None: the pixel type's own range).
        workers: ``DataLoader`` worker processes that read training batches (``data.workers``; 0: this process).
    """

    images: ImageStore
    labels: np.ndarray
    groups: np.ndarray | None = None
    clean_labels: np.ndarray | None = None
    pixel_format: PixelFormat | None = None
    workers: int = 0

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def window(self) -> tuple[float, float]:
        """``(low, high)``: the pixel values that map to 0 and 1."""
        return (self.pixel_format or PixelFormat.type_range(pixel_dtype_name(self.images))).window

    def subset(self, index: np.ndarray) -> Split:
        """The rows ``index`` of this split (a view for stores, a copy for tensors)."""
        pick = lambda a: None if a is None else a[index]  # noqa: E731
        return Split(take(self.images, index), self.labels[index], pick(self.groups), pick(self.clean_labels),
                     self.pixel_format, self.workers)

    @property
    def noise_mask(self) -> np.ndarray:
        """True where the label differs from the clean one (all False when no noise was injected)."""
        if self.clean_labels is None:
            return np.zeros(len(self), dtype=bool)
        diff = self.labels != self.clean_labels
        return diff.any(axis=1) if diff.ndim == 2 else diff


@dataclass
class DataBundle:
    """Train / val / test splits with the facts every stage needs."""

    train: Split
    val: Split
    test: Split
    task: Task
    class_names: list[str]
    mean: list[float] = field(default_factory=list)
    std: list[float] = field(default_factory=list)
    pixel_format: PixelFormat = field(default_factory=PixelFormat)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def channels(self) -> int:
        return int(self.train.images.shape[1])

    @property
    def image_size(self) -> int:
        return int(self.train.images.shape[-1])

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of every image (H == W: non-square sources are refused or resized)."""
        _, c, h, w = self.train.images.shape
        return int(c), int(h), int(w)

    @property
    def num_groups(self) -> int:
        groups = [s.groups for s in (self.train, self.val, self.test) if s.groups is not None]
        return int(max(g.max() for g in groups)) + 1 if groups else 0
