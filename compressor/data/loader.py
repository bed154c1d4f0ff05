"""Batches of pixels through ``torch.utils.data.DataLoader``: worker processes decode, pinned memory copies.

``pixel_batches`` serves ``(index, pixels)`` pairs for given index batches (the training loop draws them from its
seeded generator, so the order does not depend on the number of workers). A ``DataError`` raised while a worker
decodes (a damaged file) comes back as the same one-line ``DataError`` in the main process, not as the worker's
traceback.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from compressor.data.errors import DataError
from compressor.data.stores import ImageStore, index_array


class _Batches(Dataset):
    """``__getitems__(indices) -> (index tensor, pixels)``, with a data error returned as its message."""

    def __init__(self, images: ImageStore):
        self.images = images

    def __getitems__(self, indices: Sequence[int]):
        index = torch.from_numpy(index_array(list(indices), len(self.images)))
        try:
            return index, self.images[index]
        except DataError as exc:
            return index, str(exc)


def _as_is(batch):
    return batch


def pixel_batches(
    images: ImageStore,
    batches: Iterable[Sequence[int] | torch.Tensor | np.ndarray],
    workers: int = 0,
    pin_memory: bool = False,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """``(index, pixels)`` for each index batch, read by ``workers`` processes (0: in this process).

    Args:
        images: a split's images (tensor or store).
        batches: index batches, e.g. ``batch_indices(len(images), batch_size, generator)``.
        workers: ``DataLoader`` worker processes; each batch is read by one worker, in order.
        pin_memory: page-lock the pixel batches so that ``to_model_input`` copies them to the GPU asynchronously.

    Raises:
        DataError: an image that cannot be read (the message names it).
    """
    plan = [np.asarray(b.cpu().numpy() if isinstance(b, torch.Tensor) else b, dtype=np.int64).tolist()
            for b in batches]
    if not plan:
        return
    # A generator of its own: a DataLoader draws its workers' base seed from torch's global RNG otherwise, which
    # would shift every later global draw (dropout) and make a run depend on how its data is read. Reading draws
    # nothing else.
    loader = DataLoader(_Batches(images), batch_sampler=plan, num_workers=workers, collate_fn=_as_is,
                        pin_memory=pin_memory and torch.cuda.is_available(), prefetch_factor=2 if workers else None,
                        generator=torch.Generator().manual_seed(0))
    for index, pixels in loader:
        if isinstance(pixels, str):
            raise DataError(pixels)
        yield index, pixels
