"""Where the training loop's batches come from: the one object a data loader (with workers) may later replace.

A batch source has ``steps`` (batches per epoch) and ``epoch(generator, min_rows)``, which yields one ``Batch`` per
step: the rows, their (augmented) float images on the device, their labels and groups. A step whose batch has
fewer than ``min_rows`` rows (the ranks of a distributed run) yields None instead, without drawing anything, so
every rank skips it alike and the step count stays the same.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

from compressor.data.batches import Views, apply_views, batch_indices, to_float
from compressor.data.types import Split
from compressor.spec.training import AugmentSpec
from compressor.task import Task
from compressor.training.hooks import Batch
from compressor.training.view_plan import RandomViews, StoredViews


class ShuffledBatches:
    """Shuffled mini-batches of an in-memory split, augmented as the spec says (crop and flip drawn per batch).

    Args:
        data: the training split.
        batch_size: rows per batch (the last batch of an epoch may be smaller).
        augmentation: random crop and flip settings.
        task: what the labels are (their tensor type).
        device: where the batches go.
        views: where each batch's crop offsets and flips come from (default: drawn afresh as ``augmentation``
            says; ``StoredViews``: one of a teacher view pool's stored views per row).
    """

    def __init__(self, data: Split, batch_size: int, augmentation: AugmentSpec, task: Task,
                 device: torch.device | str, views: RandomViews | StoredViews | None = None):
        self.data, self.batch_size, self.augmentation, self.task, self.device = (data, batch_size, augmentation,
                                                                                 task, device)
        self.views = views or RandomViews(augmentation)

    @property
    def steps(self) -> int:
        """Batches per epoch."""
        return -(-len(self.data) // self.batch_size)

    def epoch(self, generator: torch.Generator, min_rows: int = 1) -> Iterator[Batch | None]:
        """One epoch of batches in an order drawn from ``generator`` (as is the augmentation)."""
        data = self.data
        for idx in batch_indices(len(data), self.batch_size, generator):
            if len(idx) < min_rows:
                yield None
                continue
            rows = idx.numpy()
            views = self.views.draw(idx, generator)
            yield Batch(
                index=idx,
                x=self.inputs(idx, views),
                labels=self.task.labels_tensor(data.labels[rows], self.device),
                groups=None if data.groups is None else torch.as_tensor(data.groups[rows], device=self.device),
                view=views.view,
            )

    def inputs(self, index: torch.Tensor, views: Views) -> torch.Tensor:
        """The float inputs of the rows ``index`` on the device, cropped and flipped as ``views`` say."""
        return apply_views(to_float(self.data.images[index], self.device), self.augmentation.crop_padding, views)
