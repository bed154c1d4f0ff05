"""Image decoding and conversion to ``uint8 [N, C, H, W]`` tensors."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from compressor.data.types import DataError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}


def read_image(path: Path, channels: int, size: int | None) -> np.ndarray:
    """Decode one image file to ``uint8 [H, W, C]`` with ``channels`` channels, resized to ``size`` if given.

    Raises:
        DataError: the file is missing or is not a readable image.
    """
    try:
        with Image.open(path) as img:
            img = img.convert("L" if channels == 1 else "RGB")
            if size is not None and img.size != (size, size):
                img = img.resize((size, size), Image.BILINEAR)
            array = np.asarray(img, dtype=np.uint8)
    except FileNotFoundError:
        raise DataError(f"{path}: image file not found") from None
    except (UnidentifiedImageError, OSError) as exc:
        raise DataError(f"{path}: unreadable image ({exc.__class__.__name__}: {exc})") from None
    return array[:, :, None] if array.ndim == 2 else array


def _probe(path: Path) -> tuple[str, tuple[int, int]]:
    """Mode and size of an image file, with a clear error when it cannot be read."""
    try:
        with Image.open(path) as img:
            return img.mode, img.size
    except FileNotFoundError:
        raise DataError(f"{path}: image file not found") from None
    except (UnidentifiedImageError, OSError) as exc:
        raise DataError(f"{path}: unreadable image ({exc.__class__.__name__}: {exc})") from None


def read_images(paths: Sequence[Path], channels: int | None, size: int | None) -> torch.Tensor:
    """Decode files into one ``uint8 [N, C, H, W]`` tensor; channels and size default to the first image's."""
    if not paths:
        raise DataError("no images to read")
    if channels is None or size is None:
        mode, (width, height) = _probe(Path(paths[0]))
        channels = channels or (1 if mode in ("1", "L", "I", "I;16", "F") else 3)
    if size is None:
        if width != height:
            raise DataError(f"{paths[0]}: images are {width}x{height}; set data.image_size to resize them square")
        size = width
    arrays = [read_image(Path(p), channels, size) for p in paths]
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()


def array_to_nchw(images: np.ndarray, name: str) -> torch.Tensor:
    """MedMNIST-style ``N x H x W`` or ``N x H x W x C`` arrays to ``uint8 [N, C, H, W]``.

    Float arrays in [0, 1] are scaled to 0-255; other ranges are rescaled by their maximum.
    """
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4 or images.shape[-1] not in (1, 3, 4):
        raise DataError(f"{name}: expected N x H x W or N x H x W x 3 images, got shape {images.shape}")
    if images.dtype != np.uint8:
        images = images.astype(np.float64)
        top = images.max() if images.size else 1.0
        scale = 255.0 if top <= 1.0 else 255.0 / top
        images = np.clip(np.rint(images * scale), 0, 255).astype(np.uint8)
    return torch.from_numpy(np.ascontiguousarray(images[..., :3])).permute(0, 3, 1, 2).contiguous()


def convert(images: torch.Tensor, channels: int | None, size: int | None) -> torch.Tensor:
    """Change channel count (1 <-> 3) and resize ``uint8 [N, C, H, W]`` images (bilinear, antialiased)."""
    if channels is not None and images.shape[1] != channels:
        if channels == 1:
            weights = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
            images = (images.float() * weights).sum(1, keepdim=True).round().clamp(0, 255).to(torch.uint8)
        else:
            images = images.expand(-1, 3, -1, -1).contiguous()
    if size is not None and tuple(images.shape[-2:]) != (size, size):
        resized = torch.nn.functional.interpolate(
            images.float(), size=(size, size), mode="bilinear", antialias=True, align_corners=False
        )
        images = resized.round().clamp(0, 255).to(torch.uint8)
    return images
