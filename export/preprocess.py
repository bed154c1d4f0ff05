"""Turn images (files, encoded bytes, PIL images, numpy arrays) into the model's ``float32 [N, C, H, W]`` input.

Only numpy and Pillow: the runtime needs no PyTorch. Conversions follow the training pipeline
(``compressor.data.images``): decoded images are converted with Pillow to ``L`` (grayscale, ITU-R 601-2 luma
``0.299 R + 0.587 G + 0.114 B``) or ``RGB`` and resized with Pillow's bilinear filter, then scaled to [0, 1].

Arrays:
    * ``H x W``: one grayscale image.
    * ``H x W x C`` with C in {1, 3, 4} (alpha dropped), else ``C x H x W`` with C in {1, 3}: one image.
    * 4-D: a batch, ``N x C x H x W`` when axis 1 is the model's channel count and the last two axes are its size,
      else ``N x H x W x C`` (C in {1, 3, 4}), else ``N x C x H x W`` (C in {1, 3}).
    * ``uint8`` (or other integers in 0-255) are pixel values; floats must be finite and within [0, 1].
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageMode, UnidentifiedImageError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
IMAGE_FORMATS = ("PNG", "JPEG", "BMP", "GIF", "TIFF", "WEBP")  # Pillow decoders tried (no EPS, PSD, ...)
MAX_PIXELS = 64_000_000  # refuse to decode images beyond this many pixels (decompression bombs)
LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


class InputError(ValueError):
    """An input that cannot be turned into a model input: not an image, wrong shape, wrong dtype or range."""


def _check_values(array: np.ndarray, name: str) -> np.ndarray:
    """``array`` as float32 in [0, 1] (integers are 0-255 pixel values), or ``InputError``."""
    numeric = np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)
    if array.dtype == np.bool_ or not numeric:
        raise InputError(f"{name}: unsupported dtype {array.dtype} (use uint8 pixels or floats in [0, 1])")
    if array.size == 0:
        raise InputError(f"{name}: empty array (shape {array.shape})")
    if np.issubdtype(array.dtype, np.integer):
        if array.dtype != np.uint8 and (array.min() < 0 or array.max() > 255):
            raise InputError(f"{name}: integer pixels must lie in 0..255 (got {array.min()}..{array.max()})")
        return array.astype(np.float32) / np.float32(255.0)
    array = array.astype(np.float32)
    if not np.isfinite(array).all():
        raise InputError(f"{name}: contains NaN or infinite values")
    low, high = float(array.min()), float(array.max())
    if low < 0.0 or high > 1.0:
        raise InputError(f"{name}: float pixels must lie in [0, 1] (got {low:.4g}..{high:.4g}); "
                         "send uint8 for 0-255 values")
    return array


def _hwc(array: np.ndarray, name: str) -> np.ndarray:
    """One image array (2-D or 3-D) in ``H x W x C`` layout."""
    if array.ndim == 2:
        return array[:, :, None]
    if array.ndim == 3:
        if array.shape[-1] in (1, 3, 4):
            return array
        if array.shape[0] in (1, 3):
            return np.moveaxis(array, 0, -1)
    raise InputError(f"{name}: cannot read an image of shape {tuple(array.shape)} "
                     "(expected H x W, H x W x C or C x H x W with C in 1, 3)")


def _convert_channels(hwc: np.ndarray, channels: int, name: str) -> np.ndarray:
    """Drop alpha, then grayscale <-> RGB to ``channels`` (float32 ``H x W x C``)."""
    if hwc.shape[-1] == 4:
        hwc = hwc[..., :3]
    have = hwc.shape[-1]
    if have == channels:
        return hwc
    if channels == 1 and have == 3:
        return (hwc @ LUMA)[..., None]
    if channels == 3 and have == 1:
        return np.repeat(hwc, 3, axis=-1)
    raise InputError(f"{name}: has {have} channels; the model takes {channels}")


def _resize(hwc: np.ndarray, size: int) -> np.ndarray:
    """Bilinear resize of a float32 ``H x W x C`` image to ``size x size`` (Pillow, per channel)."""
    if hwc.shape[:2] == (size, size):
        return hwc
    planes = [np.asarray(Image.fromarray(np.ascontiguousarray(hwc[..., c], dtype=np.float32)).resize(
        (size, size), Image.BILINEAR)) for c in range(hwc.shape[-1])]
    return np.clip(np.stack(planes, axis=-1), 0.0, 1.0)


def _from_pil(image: Image.Image, channels: int, size: int) -> np.ndarray:
    """A PIL image as float32 ``C x H x W``: converted to L or RGB and resized in uint8, as at training time."""
    if image.width * image.height > MAX_PIXELS:
        raise InputError(f"image of {image.width}x{image.height} pixels is larger than the {MAX_PIXELS} pixel limit")
    converted = image.convert("L" if channels == 1 else "RGB")
    if converted.size != (size, size):
        converted = converted.resize((size, size), Image.BILINEAR)
    array = np.asarray(converted, dtype=np.uint8)
    array = array[:, :, None] if array.ndim == 2 else array
    return np.moveaxis(array.astype(np.float32) / np.float32(255.0), -1, 0)


@dataclass(frozen=True)
class ImageHeader:
    """What an encoded image's header announces, read without decoding its pixels.

    ``bytes_per_pixel`` is the memory one pixel takes while the image is decoded (before any conversion): the
    larger of the file's samples (bit depth x channels / 8, rounded up) and Pillow's storage of the mode it decodes
    to (1 byte for ``1``/``L``/``P``, 2 for ``I;16``, 4 for every other mode, RGB included), plus what the decoder
    holds for the whole image at once (a TIFF strip may be buffered whole; a progressive JPEG keeps 16-bit DCT
    coefficients per sample; libwebp decodes into RGBA canvases of its own).
    """

    format: str
    width: int
    height: int
    bytes_per_pixel: int

    @property
    def pixels(self) -> int:
        """Width x height."""
        return self.width * self.height


def _file_bits_per_pixel(image: Image.Image, data: bytes) -> int:
    """Bit depth x channels as the file stores them (PNG: IHDR; TIFF: BitsPerSample; else the mode's sample size)."""
    if image.format == "PNG" and data[12:16] == b"IHDR":
        depth, color = data[24], data[25]  # IHDR: width, height (4 bytes each), bit depth, colour type
        return depth * {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}.get(color, 4)
    try:
        if image.format == "TIFF":
            bits = image.tag_v2.get(258, 8)  # BitsPerSample, one value per sample
            samples = image.tag_v2.get(277, len(image.getbands()))  # SamplesPerPixel
            return int(sum(bits)) if isinstance(bits, tuple) else int(bits) * int(samples)
        mode = ImageMode.getmode(image.mode)
        return len(mode.bands) * 8 * np.dtype(mode.typestr.replace("|b1", "|u1")).itemsize
    except (KeyError, TypeError, ValueError):
        return 32  # an unusual mode or tag: counted as 4 bytes per pixel, Pillow's widest storage


def image_header(data: bytes) -> ImageHeader | None:
    """The format, size and decoded bytes per pixel of encoded image ``data`` (see ``ImageHeader``), read from the
    header only (nothing is decoded); None when it is not a readable image of an accepted format."""
    try:
        with Image.open(io.BytesIO(data), formats=IMAGE_FORMATS) as image:
            file_bytes = -(-_file_bits_per_pixel(image, data) // 8)
            stored = 1 if image.mode in ("1", "L", "P") else 2 if image.mode.startswith("I;16") else 4
            held = {"TIFF": file_bytes, "WEBP": 12}.get(image.format, 0)
            if image.format in ("JPEG", "MPO") and image.info.get("progressive"):
                held = 2 * len(image.getbands())
            return ImageHeader(image.format, image.width, image.height, max(file_bytes, stored) + held)
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError, SyntaxError, ValueError, TypeError,
            KeyError, IndexError, struct.error):
        return None


def decode_image(data: bytes, channels: int, size: int, name: str = "image") -> np.ndarray:
    """Encoded image bytes (PNG, JPEG, ...) as float32 ``C x H x W`` in [0, 1].

    Raises:
        InputError: empty data, not a decodable image, or too many pixels.
    """
    if not data:
        raise InputError(f"{name}: empty image data")
    try:
        with Image.open(io.BytesIO(data), formats=IMAGE_FORMATS) as image:
            if image.width * image.height > MAX_PIXELS:
                raise InputError(f"{name}: {image.width}x{image.height} pixels exceeds the {MAX_PIXELS} pixel limit")
            image.load()
            return _from_pil(image, channels, size)
    except UnidentifiedImageError:
        raise InputError(f"{name}: not a decodable image (unknown or corrupt image format)") from None
    except (OSError, Image.DecompressionBombError, SyntaxError, ValueError) as exc:
        if isinstance(exc, InputError):
            raise
        raise InputError(f"{name}: not a decodable image ({exc.__class__.__name__}: {exc})") from None


def _from_array(array: np.ndarray, channels: int, size: int, name: str, resize: bool) -> np.ndarray:
    """One 2-D or 3-D array as float32 ``C x H x W``."""
    hwc = _hwc(array, name)
    if hwc.shape[-1] in (3, 4) and np.issubdtype(hwc.dtype, np.integer) and channels == 1:
        # Integer RGB to grayscale through Pillow, exactly as for decoded files (rounded luma in uint8).
        pixels = _check_values(hwc[..., :3], name)
        rgb = Image.fromarray(np.rint(pixels * 255.0).astype(np.uint8))
        if resize:
            return _from_pil(rgb, channels, size)
        hwc = np.asarray(rgb.convert("L"), dtype=np.uint8)[:, :, None]
    pixels = _convert_channels(_check_values(hwc, name), channels, name)
    if pixels.shape[:2] != (size, size):
        if not resize:
            raise InputError(f"{name}: image is {pixels.shape[0]}x{pixels.shape[1]}; the model takes {size}x{size}")
        if np.issubdtype(hwc.dtype, np.integer):
            # Integer pixels are resized in uint8 like decoded files, so an array and its PNG give the same input.
            plane = np.rint(pixels * 255.0).astype(np.uint8)
            return _from_pil(Image.fromarray(plane[..., 0] if channels == 1 else plane), channels, size)
        pixels = _resize(pixels, size)
    return np.ascontiguousarray(np.moveaxis(pixels, -1, 0))


def _batch_layout(array: np.ndarray, name: str) -> np.ndarray:
    """A 4-D batch as ``N x H x W x C`` items, or ``N x C x H x W`` moved to that (see the module docstring)."""
    if array.shape[-1] in (1, 3, 4):
        return array
    if array.shape[1] in (1, 3):
        return np.moveaxis(array, 1, -1)
    raise InputError(f"{name}: cannot read a batch of shape {tuple(array.shape)} "
                     "(expected N x C x H x W or N x H x W x C with C in 1, 3)")


def to_model_input(
    inputs: object, channels: int, size: int, *, resize: bool = True, name: str = "input"
) -> np.ndarray:
    """One image or a sequence of images as a ``float32 [N, C, H, W]`` batch in [0, 1].

    Args:
        inputs: a path (str or ``Path``), encoded bytes, a PIL image, a numpy array (one image, or a 4-D batch),
            or a list/tuple of those.
        channels: the model's input channels.
        size: the model's input side (H = W).
        resize: resize to ``size`` (True), or refuse arrays of another size (False: strict tensor input).
        name: how errors name the input.

    Raises:
        InputError: an input that is missing, not an image, or of the wrong shape, dtype or value range.
    """
    if isinstance(inputs, (list, tuple)):
        if not inputs:
            raise InputError(f"{name}: no images given")
        parts = [to_model_input(item, channels, size, resize=resize, name=f"{name}[{i}]")
                 for i, item in enumerate(inputs)]
        return np.concatenate(parts)
    if isinstance(inputs, np.ndarray):
        if inputs.ndim == 4:
            if inputs.shape[0] == 0:
                raise InputError(f"{name}: empty batch")
            if inputs.shape[1:] == (channels, size, size):
                return np.ascontiguousarray(_check_values(inputs, name))
            batch = _batch_layout(inputs, name)
            return np.stack([_from_array(image, channels, size, f"{name}[{i}]", resize) for i, image in
                             enumerate(batch)])
        return _from_array(inputs, channels, size, name, resize)[None]
    if isinstance(inputs, Image.Image):
        return _from_pil(inputs, channels, size)[None]
    if isinstance(inputs, (bytes, bytearray, memoryview)):
        return decode_image(bytes(inputs), channels, size, name)[None]
    if isinstance(inputs, (str, Path)):
        path = Path(inputs)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise InputError(f"{path}: file not found") from None
        except IsADirectoryError:
            raise InputError(f"{path}: is a directory, not an image file") from None
        except OSError as exc:
            raise InputError(f"{path}: cannot read ({exc.strerror})") from None
        return decode_image(data, channels, size, str(path))[None]
    raise InputError(f"{name}: unsupported input type {type(inputs).__name__} "
                     "(use a path, bytes, a PIL image or a numpy array)")
