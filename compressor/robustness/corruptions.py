"""Common corruptions at severities 1-5, vectorised on batches of float images in [0, 1] (``[N, C, H, W]``).

Definitions and severity parameters follow the CIFAR-10-C recipe of Hendrycks & Dietterich (2019), whose
images (32 px) are closest in size to the small medical and digit images compressor targets. Random
corruptions draw from the generator the caller passes, so the same seed corrupts the same way for every model.
Every output is clipped to [0, 1].
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

# Severity 1..5 parameters (CIFAR-10-C).
GAUSSIAN_NOISE_STD = (0.04, 0.06, 0.08, 0.09, 0.10)
SHOT_NOISE_PHOTONS = (500, 250, 100, 75, 50)
IMPULSE_NOISE_AMOUNT = (0.01, 0.02, 0.03, 0.05, 0.07)
GAUSSIAN_BLUR_SIGMA = (0.4, 0.6, 0.7, 0.8, 1.0)
DEFOCUS_RADIUS_ALIAS = ((0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1.0, 0.2), (1.5, 0.1))
CONTRAST_FACTOR = (0.75, 0.5, 0.4, 0.3, 0.15)
BRIGHTNESS_SHIFT = (0.05, 0.1, 0.15, 0.2, 0.3)
JPEG_QUALITY = (80, 65, 58, 50, 40)
PIXELATE_FACTOR = (0.95, 0.9, 0.85, 0.75, 0.65)


def _param(table: tuple, severity: int):
    if not 1 <= severity <= 5:
        raise ValueError(f"severity must be 1-5, got {severity}")
    return table[severity - 1]


def gaussian_noise(x: Tensor, severity: int, generator: torch.Generator) -> Tensor:
    """Additive Gaussian noise, std 0.04-0.10."""
    noise = torch.randn(x.shape, generator=generator).to(x.device, x.dtype)
    return (x + noise * _param(GAUSSIAN_NOISE_STD, severity)).clamp(0, 1)


def shot_noise(x: Tensor, severity: int, generator: torch.Generator) -> Tensor:
    """Poisson (photon-count) noise: ``Poisson(x * lam) / lam`` with ``lam`` 500 down to 50 photons."""
    lam = _param(SHOT_NOISE_PHOTONS, severity)
    counts = torch.poisson((x * lam).cpu().double(), generator=generator)
    return (counts / lam).to(x.device, x.dtype).clamp(0, 1)


def impulse_noise(x: Tensor, severity: int, generator: torch.Generator) -> Tensor:
    """Salt-and-pepper noise: each value is set to 0 or 1 (equally likely) with probability 0.01-0.07."""
    amount = _param(IMPULSE_NOISE_AMOUNT, severity)
    u = torch.rand(x.shape, generator=generator).to(x.device)
    out = torch.where(u < amount / 2, torch.zeros_like(x), x)
    return torch.where((u >= amount / 2) & (u < amount), torch.ones_like(x), out)


def _depthwise(x: Tensor, kernel: Tensor) -> Tensor:
    """Convolve every channel with the same 2-D kernel, replicate padding (edges extended, size kept)."""
    kh, kw = kernel.shape
    channels = x.shape[1]
    weight = kernel.to(x.device, x.dtype).expand(channels, 1, kh, kw)
    padded = F.pad(x, (kw // 2, kw // 2, kh // 2, kh // 2), mode="replicate")
    return F.conv2d(padded, weight, groups=channels)


def gaussian_kernel(sigma: float, radius: int | None = None) -> Tensor:
    """Normalised 2-D Gaussian ``exp(-(u^2+v^2) / (2 sigma^2))`` on a ``2r+1`` grid, r = ceil(3 sigma) by default."""
    r = radius if radius is not None else max(1, math.ceil(3 * sigma))
    u = torch.arange(-r, r + 1, dtype=torch.float64)
    g = torch.exp(-(u**2) / (2 * sigma**2))
    k = torch.outer(g, g)
    return (k / k.sum()).float()


def disk_kernel(radius: float, alias_blur: float) -> Tensor:
    """Defocus kernel: the indicator of the disk ``u^2 + v^2 <= radius^2``, normalised, then Gaussian-smoothed
    (3x3, sigma ``alias_blur``) to soften its aliased edge, as in ImageNet-C."""
    r = max(1, math.ceil(radius)) + 1
    u = torch.arange(-r, r + 1, dtype=torch.float64)
    disk = ((u[:, None] ** 2 + u[None, :] ** 2) <= radius**2).double()
    disk = disk / disk.sum()
    smooth = gaussian_kernel(alias_blur, radius=1).double()
    k = F.conv2d(disk[None, None], smooth[None, None], padding=1)[0, 0]
    return (k / k.sum()).float()


def gaussian_blur(x: Tensor, severity: int, generator: torch.Generator) -> Tensor:
    """Gaussian blur, sigma 0.4-1.0 pixels."""
    return _depthwise(x, gaussian_kernel(_param(GAUSSIAN_BLUR_SIGMA, severity))).clamp(0, 1)


def defocus_blur(x: Tensor, severity: int, generator: torch.Generator) -> Tensor:
    """Defocus-style blur: convolution with a disk of radius 0.3-1.5 pixels."""
    radius, alias = _param(DEFOCUS_RADIUS_ALIAS, severity)
    return _depthwise(x, disk_kernel(radius, alias)).clamp(0, 1)


def contrast(x: Tensor, severity: int, generator: torch.Generator) -> Tensor:
    """Contrast reduction towards each image's per-channel mean: ``(x - m) * c + m``, c 0.75 down to 0.15."""
    c = _param(CONTRAST_FACTOR, severity)
    mean = x.mean(dim=(2, 3), keepdim=True)
    return ((x - mean) * c + mean).clamp(0, 1)


def brightness(x: Tensor, severity: int, generator: torch.Generator) -> Tensor:
    """Brightness: the HSV value ``V = max_c x_c`` is raised by 0.05-0.3 (clipped at 1), hue and saturation kept.

    Scaling all channels of a pixel by ``V' / V`` changes V to V' and leaves H and S unchanged, so this is the
    HSV operation without a colour-space round trip (for one channel it is ``x + shift``); black pixels become
    grey ``V'``.
    """
    shift = _param(BRIGHTNESS_SHIFT, severity)
    value = x.amax(dim=1, keepdim=True)
    new_value = (value + shift).clamp(max=1.0)
    scaled = x * (new_value / value.clamp_min(1e-12))
    return torch.where(value > 0, scaled, new_value.expand_as(x)).clamp(0, 1)


def jpeg(x: Tensor, severity: int, generator: torch.Generator) -> Tensor:
    """JPEG compression at quality 80 down to 40 (torchvision's libjpeg encoder, one image at a time)."""
    from torchvision.io import decode_jpeg, encode_jpeg

    quality = _param(JPEG_QUALITY, severity)
    pixels = (x.detach().cpu() * 255).round().clamp(0, 255).to(torch.uint8)
    decoded = decode_jpeg(encode_jpeg(list(pixels), quality=quality))
    return (torch.stack(decoded).to(x.device, x.dtype) / 255.0).clamp(0, 1)


def pixelate(x: Tensor, severity: int, generator: torch.Generator) -> Tensor:
    """Pixelation: box down-sampling to 0.95-0.65 of the side, then nearest up-sampling back."""
    factor = _param(PIXELATE_FACTOR, severity)
    h, w = x.shape[-2:]
    small = F.interpolate(x, size=(max(1, int(h * factor)), max(1, int(w * factor))), mode="area")
    return F.interpolate(small, size=(h, w), mode="nearest").clamp(0, 1)


CORRUPTIONS: dict[str, Callable[[Tensor, int, torch.Generator], Tensor]] = {
    "gaussian_noise": gaussian_noise,
    "shot_noise": shot_noise,
    "impulse_noise": impulse_noise,
    "gaussian_blur": gaussian_blur,
    "defocus_blur": defocus_blur,
    "contrast": contrast,
    "brightness": brightness,
    "jpeg": jpeg,
    "pixelate": pixelate,
}


def corrupt(x: Tensor, name: str, severity: int, generator: torch.Generator) -> Tensor:
    """Apply the corruption ``name`` at ``severity`` (1-5) to a batch of images in [0, 1].

    Raises:
        ValueError: unknown corruption name or severity outside 1-5.
    """
    if name not in CORRUPTIONS:
        raise ValueError(f"unknown corruption {name!r}; available: {', '.join(CORRUPTIONS)}")
    return CORRUPTIONS[name](x, severity, generator)
