"""Mini-batches over integer pixels (in memory or streamed): shuffling, float conversion and augmentation."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from compressor.data.loader import pixel_batches
from compressor.data.normalize import to_model_input
from compressor.data.stores import ImageStore, LazyStore
from compressor.spec.training import AugmentSpec


def to_float(
    images: torch.Tensor, device: torch.device | str, window: tuple[float, float] | None = None
) -> torch.Tensor:
    """Integer pixels ``[N, C, H, W]`` to ``float32`` in [0, 1] on ``device`` through the data set's ``window``
    (``split.window``; None: the pixel type's range, /255 for uint8). See ``compressor.data.to_model_input``.

    Bound for a CUDA device, a host batch is copied from pinned memory without blocking (the conversion that follows
    runs on the device, in stream order after the copy).
    """
    if torch.device(device).type == "cuda" and images.device.type == "cpu" and not images.is_pinned():
        images = images.pin_memory()
    return to_model_input(images, window, device)


def batch_indices(n: int, batch_size: int, generator: torch.Generator | None) -> Iterator[torch.Tensor]:
    """Index batches over ``range(n)``: shuffled with ``generator``, in order when it is None."""
    order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
    for start in range(0, n, batch_size):
        yield order[start : start + batch_size]


@dataclass
class Views:
    """Which view of each image a batch holds: crop offsets in the zero-padded image and horizontal flips.

    Attributes:
        dy: ``int64 [B]`` top offset of the crop, in ``0 .. 2 * padding`` (None: no crop).
        dx: ``int64 [B]`` left offset of the crop (None: no crop).
        flip: ``bool [B]`` flipped left-right after the crop (None: no flip).
        view: ``int64 [B]`` the stored view of each row in a teacher view pool (None: drawn afresh).
    """

    dy: torch.Tensor | None = None
    dx: torch.Tensor | None = None
    flip: torch.Tensor | None = None
    view: torch.Tensor | None = None


def draw_views(n: int, spec: AugmentSpec, generator: torch.Generator) -> Views:
    """Random crop offsets (``spec.crop_padding``) and flips (``spec.hflip``) of ``n`` images, drawn from ``generator``.

    The draws, in order: ``n`` row offsets, ``n`` column offsets, ``n`` flip coins (each only when that augmentation
    is on).
    """
    views = Views()
    if spec.crop_padding > 0:
        views.dy = torch.randint(0, 2 * spec.crop_padding + 1, (n,), generator=generator)
        views.dx = torch.randint(0, 2 * spec.crop_padding + 1, (n,), generator=generator)
    if spec.hflip:
        views.flip = torch.rand(n, generator=generator) < 0.5
    return views


def apply_views(x: torch.Tensor, padding: int, views: Views) -> torch.Tensor:
    """Crop ``x`` (``[N, C, H, W]``, zero-padded by ``padding``) at ``views``' offsets, then flip the rows it says.

    Vectorised over the batch: one gather for the crops, one ``where`` for the flips.
    """
    if views.dy is not None:
        n, _, h, w = x.shape
        padded = F.pad(x, (padding, padding, padding, padding))
        rows = (views.dy[:, None] + torch.arange(h)[None, :]).to(x.device)  # [N, H]
        cols = (views.dx[:, None] + torch.arange(w)[None, :]).to(x.device)  # [N, W]
        batch = torch.arange(n, device=x.device)[:, None, None]
        x = padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)
    if views.flip is not None:
        x = torch.where(views.flip.to(x.device)[:, None, None, None], x.flip(-1), x)
    return x.contiguous()


def iterate_inputs(
    images: ImageStore, batch_size: int, device: torch.device | str, window: tuple[float, float] | None = None
) -> Iterator[torch.Tensor]:
    """Float input batches in order, without augmentation (evaluation, batch-norm recomputation, teacher logits).

    A store is read batch by batch (never whole), by its ``workers`` ``DataLoader`` processes, into pinned memory
    when the batches go to a GPU.
    """
    if not isinstance(images, LazyStore):
        for idx in batch_indices(len(images), batch_size, None):
            yield to_float(images[idx], device, window)
        return
    pin = torch.device(device).type == "cuda"
    for _, pixels in pixel_batches(images, batch_indices(len(images), batch_size, None), images.workers, pin):
        yield to_float(pixels, device, window)
