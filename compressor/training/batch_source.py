"""Where the training loop's batches come from: shuffled index batches, their pixels, augmentation.

A batch source has ``steps`` (batches per epoch) and ``epoch(generator, min_rows)``, which yields one ``Batch`` per
step: the rows, their (augmented) float images on the device, their labels and groups. A step whose batch has
fewer than ``min_rows`` rows (the ranks of a distributed run) yields None instead, without drawing anything, so
every rank skips it alike and the step count stays the same.

Every random choice is made in this process from the loop's generator, in one fixed order per epoch: the batch
order first (one permutation), then, batch by batch, the augmentation. Reading the pixels draws nothing, so where
they come from does not change a run: an in-memory split is indexed directly; a split streamed from disk (a
memory-mapped array, image files) or one with ``data.workers > 0`` is read through ``torch.utils.data.DataLoader``
(``compressor.data.pixel_batches``): worker processes decode the planned batches ahead of the loop, in plan order,
into pinned memory on CUDA, and the main process windows each batch and crops and flips it (``views``) on the device.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch

from compressor.data.batches import Views, apply_views, batch_indices, draw_views, to_float
from compressor.data.loader import pixel_batches
from compressor.data.stores import LazyStore
from compressor.data.types import Split
from compressor.spec.training import AugmentSpec
from compressor.task import Task
from compressor.training.hooks import Batch
from compressor.training.view_plan import StoredViews


class ShuffledBatches:
    """Shuffled mini-batches of a split, augmented as the spec says (crop and flip drawn per batch).

    Args:
        data: the training split (in memory or streamed; ``data.workers`` DataLoader processes read it).
        batch_size: rows per batch (the last batch of an epoch may be smaller).
        augmentation: random crop and flip settings.
        task: what the labels are (their tensor type).
        device: where the batches go.
        views: where each batch's crop offsets and flips come from (None: drawn afresh as ``augmentation`` says;
            ``StoredViews``: one of a teacher view pool's stored views per row).
    """

    def __init__(self, data: Split, batch_size: int, augmentation: AugmentSpec, task: Task,
                 device: torch.device | str, views: StoredViews | None = None):
        self.data, self.batch_size, self.augmentation, self.task = data, batch_size, augmentation, task
        self.device = torch.device(device)
        self.views = views

    @property
    def steps(self) -> int:
        """Batches per epoch."""
        return -(-len(self.data) // self.batch_size)

    def pixels(self, plan: Sequence[torch.Tensor]) -> Iterator[torch.Tensor]:
        """The integer pixels of each index batch of ``plan``, in order."""
        if not (isinstance(self.data.images, LazyStore) or self.data.workers > 0):  # else: a DataLoader reads them
            for idx in plan:
                yield self.data.images[idx]
            return
        for _, pixels in pixel_batches(self.data.images, plan, workers=self.data.workers,
                                       pin_memory=self.device.type == "cuda"):
            yield pixels

    def inputs(self, pixels: torch.Tensor, views: Views) -> torch.Tensor:
        """A batch's model input: its pixels through the data set's window on the device, cropped and flipped as
        ``views`` say."""
        return apply_views(to_float(pixels, self.device, self.data.window), self.augmentation.crop_padding, views)

    def epoch(self, generator: torch.Generator, min_rows: int = 1) -> Iterator[Batch | None]:
        """One epoch of batches in an order drawn from ``generator`` (as is the augmentation)."""
        data = self.data
        plan = list(batch_indices(len(data), self.batch_size, generator))
        pixels = self.pixels([idx for idx in plan if len(idx) >= min_rows])
        for idx in plan:
            if len(idx) < min_rows:
                yield None
                continue
            rows = idx.numpy()
            if self.views is None:
                views = draw_views(len(idx), self.augmentation, generator)
            else:
                views = self.views.draw(idx, generator)
            yield Batch(
                index=idx,
                x=self.inputs(next(pixels), views),
                labels=self.task.labels_tensor(data.labels[rows], self.device),
                groups=None if data.groups is None else torch.as_tensor(data.groups[rows], device=self.device),
                view=views.view,
            )
