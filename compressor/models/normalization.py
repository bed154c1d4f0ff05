"""Input normalisation of a model given pixels in [0, 1]: the named choices of the spec as per-channel mean / std.

Every choice is ``(x - mean) / std`` per channel: ``none`` is mean 0, std 1; ``pixels`` (models that take 0-255
values) is mean 0, std 1/255. ImageNet's statistics are defined for RGB; a single-channel (grey) input uses their
average over the three channels, which matches the first convolution's weights summed over RGB (see
``compressor.models.pretrained.adapt_input_channels``).
"""

from __future__ import annotations

from collections.abc import Sequence

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
NAMED = ("data", "imagenet", "none", "pixels")


def named_statistics(
    name: str, channels: int, data_mean: Sequence[float], data_std: Sequence[float]
) -> tuple[list[float], list[float]]:
    """Mean and std of a named choice (``data``, ``imagenet``, ``none``, ``pixels``) for ``channels`` channels.

    Raises:
        ValueError: an unknown name.
    """
    if name == "data":
        return [float(v) for v in data_mean], [float(v) for v in data_std]
    if name == "imagenet":  # RGB as published; any other channel count: the RGB average
        if channels == 3:
            return list(IMAGENET_MEAN), list(IMAGENET_STD)
        return [sum(IMAGENET_MEAN) / 3] * channels, [sum(IMAGENET_STD) / 3] * channels
    if name == "none":
        return [0.0] * channels, [1.0] * channels
    if name == "pixels":
        return [0.0] * channels, [1.0 / 255.0] * channels
    raise ValueError(f"unknown normalisation {name!r} (expected one of {', '.join(NAMED)})")


def per_channel(values: Sequence[float], channels: int, what: str) -> list[float]:
    """``values`` for ``channels`` channels: one value is repeated; otherwise there must be one per channel.

    Raises:
        ValueError: neither one value nor one per channel.
    """
    if len(values) == 1:
        return [float(values[0])] * channels
    if len(values) != channels:
        raise ValueError(f"{what} has {len(values)} values but the images have {channels} channels")
    return [float(v) for v in values]
