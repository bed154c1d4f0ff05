"""Data containers shared by the pipeline."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch


class DataError(Exception):
    """A data set that cannot be used (missing file, wrong keys, mismatched counts, unreadable image)."""


@dataclass
class Split:
    """One split of a data set, held in memory.

    Attributes:
        images: ``uint8`` tensor ``[N, C, H, W]`` (pixels 0-255; models take ``images / 255``).
        labels: ``int64 [N]`` class indices (multiclass) or ``float32 [N, L]`` 0/1 labels (multilabel).
        groups: optional ``int64 [N]`` group (domain) labels.
        clean_labels: the labels before synthetic noise was injected (None where no noise was injected).
    """

    images: torch.Tensor
    labels: np.ndarray
    groups: np.ndarray | None = None
    clean_labels: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def subset(self, index: np.ndarray) -> Split:
        """The rows ``index`` of this split."""
        idx = torch.as_tensor(index, dtype=torch.long)
        pick = lambda a: None if a is None else a[index]  # noqa: E731
        return Split(self.images[idx], self.labels[index], pick(self.groups), pick(self.clean_labels))

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
    task: str  # "multiclass" or "multilabel"
    class_names: list[str]
    mean: list[float] = field(default_factory=list)
    std: list[float] = field(default_factory=list)

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
    def num_groups(self) -> int:
        groups = [s.groups for s in (self.train, self.val, self.test) if s.groups is not None]
        return int(max(g.max() for g in groups)) + 1 if groups else 0
