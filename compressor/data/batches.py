"""Mini-batches over in-memory ``uint8`` images: shuffling, float conversion and augmentation."""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn.functional as F

from compressor.spec.training import AugmentSpec


def to_float(images: torch.Tensor, device: torch.device | str) -> torch.Tensor:
    """``uint8 [N, C, H, W]`` to ``float32`` in [0, 1] on ``device``."""
    return images.to(device, non_blocking=True).float().div_(255.0)


def batch_indices(
    n: int, batch_size: int, generator: torch.Generator | None, drop_last: bool = False
) -> Iterator[torch.Tensor]:
    """Index batches over ``range(n)``: shuffled with ``generator``, in order when it is None."""
    order = torch.randperm(n, generator=generator) if generator is not None else torch.arange(n)
    stop = n - n % batch_size if drop_last and n >= batch_size else n
    for start in range(0, stop, batch_size):
        yield order[start : start + batch_size]


def augment(x: torch.Tensor, spec: AugmentSpec, generator: torch.Generator) -> torch.Tensor:
    """Random crop after zero padding and random horizontal flip, vectorised over the batch."""
    if spec.crop_padding > 0:
        pad = spec.crop_padding
        n, _, h, w = x.shape
        padded = F.pad(x, (pad, pad, pad, pad))
        dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
        dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
        rows = (dy[:, None] + torch.arange(h)[None, :]).to(x.device)  # [N, H]
        cols = (dx[:, None] + torch.arange(w)[None, :]).to(x.device)  # [N, W]
        batch = torch.arange(n, device=x.device)[:, None, None]
        x = padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)
    if spec.hflip:
        flip = (torch.rand(x.shape[0], generator=generator) < 0.5).to(x.device)
        x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    return x.contiguous()


def iterate_inputs(images: torch.Tensor, batch_size: int, device: torch.device | str) -> Iterator[torch.Tensor]:
    """Float input batches in order, without augmentation (evaluation, batch-norm recomputation)."""
    for idx in batch_indices(len(images), batch_size, None):
        yield to_float(images[idx], device)
