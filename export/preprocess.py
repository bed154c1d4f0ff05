"""Turn images (files, encoded bytes, PIL images, numpy arrays) into the model's ``float32 [N, C, H, W]`` input.

Only numpy and Pillow (pydicom for DICOM files, optional): the runtime needs no PyTorch. Files are decoded exactly as
at training time, by ``compressor.export.decode``: pixels in the file's own integer type, converted to the model's
channels (luma ``0.299 R + 0.587 G + 0.114 B`` for grey), resized bilinearly, then mapped to [0, 1] by the data set's
window recorded in the model's metadata (``pixel_format``; models without it take 8-bit pixels, window 0..255). A
file whose type differs from the model's (an 8-bit PNG for a model trained on 16-bit X-rays, or the reverse) is
refused rather than rescaled by guesswork.

Arrays:
    * ``H x W``: one grayscale image.
    * ``H x W x C`` with C in {1, 3, 4} (alpha dropped), else ``C x H x W`` with C in {1, 3}: one image.
    * 4-D: a batch, ``N x C x H x W`` when axis 1 is the model's channel count and the last two axes are its size,
      else ``N x H x W x C`` (C in {1, 3, 4}), else ``N x C x H x W`` (C in {1, 3}).
    * Integers are raw pixel values of the model's type (0..255 for 8-bit models, 0..65535 for 16-bit ones) and go
      through the window; floats must be finite and within [0, 1] and are taken as the window's output already.
      A model trained on floating-point pixels takes float arrays as raw values (through its window) instead.
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageMode, UnidentifiedImageError

from .decode import (
    IMAGE_FORMATS,
    IMAGE_SUFFIXES,
    MAX_PIXELS,
    InputError,
    PixelFormat,
    conform,
    decode_file,
    read_bytes,
)

__all__ = ["IMAGE_FORMATS", "IMAGE_SUFFIXES", "MAX_PIXELS", "ImageHeader", "InputError", "decode_image",
           "image_header", "to_model_input"]

LEGACY_FORMAT = PixelFormat.type_range("uint8")  # models exported before the pixel format was recorded


def _check_array(array: np.ndarray, fmt: PixelFormat, name: str) -> tuple[np.ndarray, bool]:
    """``array`` ready for ``conform``: raw pixels in the model's type (True) or floats in [0, 1] (False)."""
    if array.dtype.kind not in "iuf":  # not issubdtype(integer): timedelta64 passes it
        raise InputError(f"{name}: unsupported dtype {array.dtype} (use {fmt.dtype} pixels or floats in [0, 1])")
    if array.size == 0:
        raise InputError(f"{name}: empty array (shape {array.shape})")
    if array.dtype.kind in "iu":
        if fmt.dtype != "float32":
            top = 255 if fmt.dtype == "uint8" else 65535
            if array.dtype != fmt.numpy_dtype and (array.min() < 0 or array.max() > top):
                raise InputError(f"{name}: integer pixels must lie in 0..{top} (got {array.min()}..{array.max()})")
        return array.astype(fmt.numpy_dtype, copy=False), True
    array = array.astype(np.float32)
    if not np.isfinite(array).all():
        raise InputError(f"{name}: contains NaN or infinite values")
    if fmt.dtype == "float32":
        return array, True
    low, high = float(array.min()), float(array.max())
    if low < 0.0 or high > 1.0:
        raise InputError(f"{name}: float pixels must lie in [0, 1] (got {low:.4g}..{high:.4g}); "
                         f"send {fmt.dtype} for raw pixel values")
    return array, False


def _channels_last(array: np.ndarray, name: str) -> np.ndarray:
    """One image array (2-D or 3-D) in ``H x W x C`` layout, or a 4-D batch in ``N x H x W x C`` (channels moved
    last when they come first; see the module docstring)."""
    if array.ndim == 2:
        return array[:, :, None]
    if array.ndim in (3, 4):
        if array.shape[-1] in (1, 3, 4):
            return array
        if array.shape[-3] in (1, 3):
            return np.moveaxis(array, -3, -1)
    if array.ndim == 4:
        raise InputError(f"{name}: cannot read a batch of shape {tuple(array.shape)} "
                         "(expected N x C x H x W or N x H x W x C with C in 1, 3)")
    raise InputError(f"{name}: cannot read an image of shape {tuple(array.shape)} "
                     "(expected H x W, H x W x C or C x H x W with C in 1, 3)")


def _to_input(hwc: np.ndarray, raw: bool, fmt: PixelFormat, channels: int, size: int, name: str,
              resize: bool) -> np.ndarray:
    """Checked ``H x W x C`` pixels as float32 ``C x H x W``: conformed, then windowed (raw pixels) or clipped."""
    pixels = conform(hwc, channels, size if resize else None, name)
    if pixels.shape[:2] != (size, size):
        raise InputError(f"{name}: image is {pixels.shape[0]}x{pixels.shape[1]}; the model takes {size}x{size}")
    unit = fmt.to_unit(pixels) if raw else np.clip(pixels, np.float32(0.0), np.float32(1.0))
    return np.ascontiguousarray(np.moveaxis(unit, -1, 0))


def _file_pixels(pixels: np.ndarray, fmt: PixelFormat, name: str) -> np.ndarray:
    """Decoded file pixels, refused when their type is not the model's (no silent rescaling)."""
    if pixels.dtype != fmt.numpy_dtype:
        bits = {np.dtype(np.uint8): "8-bit", np.dtype(np.uint16): "16-bit"}
        if fmt.dtype == "float32":
            raise InputError(f"{name}: the model was trained on floating-point pixels; send float arrays, not files")
        raise InputError(f"{name}: {bits[pixels.dtype]} image, but the model was trained on "
                         f"{bits[fmt.numpy_dtype]} images (pixel window {list(fmt.window)}); convert it first")
    return pixels


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


def decode_image(data: bytes, channels: int, size: int, name: str = "image",
                 pixel_format: PixelFormat | None = None) -> np.ndarray:
    """Encoded image bytes (PNG, JPEG, TIFF, DICOM, ...) as float32 ``C x H x W`` in [0, 1].

    Args:
        data: the encoded file.
        channels: the model's input channels.
        size: the model's input side.
        name: how errors name the input.
        pixel_format: the model's pixel type and window (``ModelMetadata.pixel_format``); None: 8-bit, 0..255.

    Raises:
        InputError: empty data, not a decodable image, too many pixels, or a pixel type the model was not trained on.
    """
    fmt = pixel_format or LEGACY_FORMAT
    pixels = decode_file(data, name)
    return _to_input(_file_pixels(pixels, fmt, name), True, fmt, channels, size, name, resize=True)


def _from_pil(image: Image.Image, fmt: PixelFormat, channels: int, size: int, name: str) -> np.ndarray:
    """A PIL image, saved losslessly and decoded like a file (so an image and its PNG give the same input)."""
    if image.width * image.height > MAX_PIXELS:
        raise InputError(f"{name}: {image.width}x{image.height} pixels exceeds the {MAX_PIXELS} pixel limit")
    if image.mode in ("CMYK", "YCbCr", "LAB", "HSV"):
        image = image.convert("RGB")  # colour spaces PNG cannot hold: 8-bit RGB, as Pillow decodes such files
    buffer = io.BytesIO()
    try:
        image.save(buffer, format="TIFF" if image.mode in ("I", "F") or image.mode.startswith("I;") else "PNG")
    except (OSError, ValueError, KeyError) as exc:
        raise InputError(f"{name}: cannot read a PIL image of mode {image.mode} ({exc})") from None
    return decode_image(buffer.getvalue(), channels, size, name, fmt)


def _from_array(array: np.ndarray, fmt: PixelFormat, channels: int, size: int, name: str,
                resize: bool) -> np.ndarray:
    """One 2-D or 3-D array as float32 ``C x H x W``."""
    hwc, raw = _check_array(_channels_last(array, name), fmt, name)
    return _to_input(hwc, raw, fmt, channels, size, name, resize)


def to_model_input(
    inputs: object, channels: int, size: int, *, resize: bool = True, name: str = "input",
    pixel_format: PixelFormat | None = None,
) -> np.ndarray:
    """One image or a sequence of images as a ``float32 [N, C, H, W]`` batch in [0, 1].

    Args:
        inputs: a path (str or ``Path``), encoded bytes, a PIL image, a numpy array (one image, or a 4-D batch),
            or a list/tuple of those.
        channels: the model's input channels.
        size: the model's input side (H = W).
        resize: resize to ``size`` (True), or refuse arrays of another size (False: strict tensor input).
        name: how errors name the input.
        pixel_format: the model's pixel type and window (``ModelMetadata.pixel_format``); None: 8-bit, 0..255.

    Raises:
        InputError: an input that is missing, not an image, or of the wrong shape, dtype or value range.
    """
    fmt = pixel_format or LEGACY_FORMAT
    if isinstance(inputs, (list, tuple)):
        if not inputs:
            raise InputError(f"{name}: no images given")
        parts = [to_model_input(item, channels, size, resize=resize, name=f"{name}[{i}]", pixel_format=fmt)
                 for i, item in enumerate(inputs)]
        return np.concatenate(parts)
    if isinstance(inputs, np.ndarray):
        if inputs.ndim == 4:
            if inputs.shape[0] == 0:
                raise InputError(f"{name}: empty batch")
            if inputs.shape[1:] == (channels, size, size):
                array, raw = _check_array(inputs, fmt, name)
                return np.ascontiguousarray(fmt.to_unit(array) if raw else array)
            batch = _channels_last(inputs, name)
            return np.stack([_from_array(image, fmt, channels, size, f"{name}[{i}]", resize)
                             for i, image in enumerate(batch)])
        return _from_array(inputs, fmt, channels, size, name, resize)[None]
    if isinstance(inputs, Image.Image):
        return _from_pil(inputs, fmt, channels, size, name)[None]
    if isinstance(inputs, (bytes, bytearray, memoryview)):
        return decode_image(bytes(inputs), channels, size, name, fmt)[None]
    if isinstance(inputs, (str, Path)):
        path = Path(inputs)
        return decode_image(read_bytes(path), channels, size, str(path), fmt)[None]
    raise InputError(f"{name}: unsupported input type {type(inputs).__name__} "
                     "(use a path, bytes, a PIL image or a numpy array)")
