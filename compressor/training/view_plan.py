"""Which view of each image a training batch shows: drawn afresh (``RandomViews``) or one of a pool's stored views.

The batch source asks its plan for the crop offsets and flips of each batch's rows (``draw(index, generator)``)
and builds the inputs from them (``compressor.data.batches.apply_views``). ``RandomViews`` draws them as the spec's
augmentation says, every batch anew. ``StoredViews`` picks, for every row, one of the ``V`` views a teacher view
pool stored for that image (``compressor.training.view_pool``), uniformly from the loop's generator, and returns
its stored offsets and flip together with the view's number, so the teachers' stored output for that view is
exactly their output for the input the student sees.
"""

from __future__ import annotations

import numpy as np
import torch

from compressor.data.batches import Views, draw_views
from compressor.spec.training import AugmentSpec


class RandomViews:
    """Crop offsets and flips drawn afresh for every batch (``augment``'s draws)."""

    def __init__(self, augmentation: AugmentSpec):
        self.augmentation = augmentation

    def draw(self, index: torch.Tensor, generator: torch.Generator) -> Views:
        """The views of the rows ``index`` (only their number matters here)."""
        return draw_views(len(index), self.augmentation, generator)


class StoredViews:
    """One of the ``V`` stored views of each image, drawn uniformly per row and epoch.

    Args:
        offsets: ``[N, V, 2]`` crop offsets ``(dy, dx)`` of every stored view (None: the views are not cropped).
        flips: ``[N, V]`` bool, flipped views (None: no view is flipped).
        views: ``V``, the number of stored views per image.
    """

    def __init__(self, offsets: np.ndarray | None, flips: np.ndarray | None, views: int):
        self.offsets, self.flips, self.views = offsets, flips, views

    def draw(self, index: torch.Tensor, generator: torch.Generator) -> Views:
        """The stored views of the rows ``index``: one view number per row (no draw at all when ``V == 1``)."""
        if self.views > 1:
            view = torch.randint(0, self.views, (len(index),), generator=generator)
        else:
            view = torch.zeros(len(index), dtype=torch.long)
        rows, cols = index.numpy(), view.numpy()
        picked = Views(view=view)
        if self.offsets is not None:
            offsets = torch.from_numpy(np.asarray(self.offsets[rows, cols], dtype=np.int64))
            picked.dy, picked.dx = offsets[:, 0], offsets[:, 1]
        if self.flips is not None:
            picked.flip = torch.from_numpy(np.asarray(self.flips[rows, cols], dtype=bool))
        return picked
