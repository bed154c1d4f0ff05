"""Which view of each image a training batch shows when the views come from a teacher view pool.

Without a pool the batch source draws each batch's crop offsets and flips afresh, as the spec's augmentation says
(``compressor.data.batches.draw_views``). With one, it asks its ``StoredViews`` plan for them
(``draw(index, generator)``): for every row, one of the ``V`` views the pool stored for that image
(``compressor.training.view_pool``), picked uniformly from the loop's generator, with its stored offsets and flip
and the view's number, so the teachers' stored output for that view is exactly their output for the input the
student sees. Either way the inputs are built from the views by ``compressor.data.batches.apply_views``.
"""

from __future__ import annotations

import numpy as np
import torch

from compressor.data.batches import Views


class StoredViews:
    """One of the ``V`` stored views of each image, drawn uniformly per row and epoch.

    Args:
        stored: ``[N, V, 3]`` crop offsets ``(dy, dx)`` and flip (0/1) of every stored view (a pool's ``views.npy``).
        cropped: whether the views are cropped (else their offsets are not used).
        flipped: whether some views are flipped (else their flips are not used).
    """

    def __init__(self, stored: np.ndarray, cropped: bool, flipped: bool):
        self.offsets = stored[..., :2] if cropped else None
        self.flips = stored[..., 2] if flipped else None
        self.views = stored.shape[1]

    def draw(self, index: torch.Tensor, generator: torch.Generator) -> Views:
        """The stored views of the rows ``index``: one view number per row (no draw at all when ``V == 1``)."""
        if self.views > 1:
            view = torch.randint(0, self.views, (len(index),), generator=generator)
        else:
            view = torch.zeros(len(index), dtype=torch.long)
        return self.pick(index.numpy(), view)

    def pick(self, rows: np.ndarray, view: torch.Tensor) -> Views:
        """Stored view ``view[i]`` of image ``rows[i]``, for every ``i``."""
        cols = view.numpy()
        picked = Views(view=view)
        if self.offsets is not None:
            offsets = torch.from_numpy(np.asarray(self.offsets[rows, cols], dtype=np.int64))
            picked.dy, picked.dx = offsets[:, 0], offsets[:, 1]
        if self.flips is not None:
            picked.flip = torch.from_numpy(np.asarray(self.flips[rows, cols], dtype=bool))
        return picked
