"""From integer pixels to the model's input: the data set's window maps them to [0, 1] on the device."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from compressor.data.types import pixel_dtype_name
from compressor.export.decode import TYPE_WINDOWS


def to_model_input(
    pixels: torch.Tensor,
    window: Sequence[float] | None,
    device: torch.device | str,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> torch.Tensor:
    """``[N, C, H, W]`` pixels as float32 ``clip((x - low) / (high - low), 0, 1)`` on ``device``.

    The same float32 operations as ``compressor.export.decode.PixelFormat.to_unit`` (what ``predict`` and ``serve``
    run), so a file gives bit-identical inputs in training and deployment. The pixels are copied to the device in
    their integer type (half the bytes of float32 for uint16, a quarter for uint8) and converted there.

    Args:
        pixels: integer (or float32) pixels, e.g. a batch of ``split.images``; pinned memory copies asynchronously.
        window: ``(low, high)``, the data set's window (``split.window``); None: the pixel type's own range.
        device: where the input is needed.
        mean, std: per-channel normalisation applied after the window, for models that do not contain it. Models
            built by compressor normalise inside (``NormalizedClassifier``) and take the [0, 1] input: leave None.
    """
    low, high = window if window is not None else TYPE_WINDOWS[pixel_dtype_name(pixels)]
    x = pixels.to(device, non_blocking=True).float()
    low_t = torch.tensor(low, dtype=torch.float32, device=x.device)
    width = torch.tensor(float(high) - float(low), dtype=torch.float32, device=x.device)
    x = x.sub_(low_t).div_(width).clamp_(0.0, 1.0)
    if mean is not None or std is not None:
        shape = (1, -1, 1, 1)
        m = torch.tensor(list(mean if mean is not None else [0.0]), dtype=torch.float32, device=x.device).view(shape)
        s = torch.tensor(list(std if std is not None else [1.0]), dtype=torch.float32, device=x.device).view(shape)
        x = x.sub_(m).div_(s)
    return x
