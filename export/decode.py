"""Lossless decoding of image files and arrays, and the one per-data-set window that maps pixels to [0, 1].

numpy and Pillow only (pydicom for DICOM files, an optional extra). Training (``compressor.data``) and the runtime
(``compressor predict``, ``compressor serve``) decode through these functions, so one file gives one model input
everywhere:

1. ``decode_file``: the file's pixels in its own integer type, ``H x W x C``: ``uint8`` for 8-bit files, ``uint16``
   for 16-bit grayscale PNG/TIFF (Pillow modes ``I;16*``, or ``I`` within 0..65535) and for DICOM. Files whose
   precision Pillow would drop (16-bit colour or grey+alpha PNG/TIFF, 32-bit float images) are refused, never
   silently truncated.
2. ``conform``: channel count (grey <-> RGB, alpha dropped) and bilinear resize, in that integer type.
3. ``PixelFormat.to_unit``: the data set's window ``[low, high]`` to [0, 1]: ``clip((x - low) / (high - low), 0, 1)``
   in float32. The window belongs to the data set (recorded in the run and in the ONNX metadata), never to one image.

DICOM (``.dcm``, or a file with ``DICM`` at byte 128) is mapped to ``uint16`` by a rule that depends only on the
file's own header: the modality rescale (``RescaleSlope``/``RescaleIntercept`` or a modality LUT), then the VOI
window (``WindowCenter``/``WindowWidth``) when present, both through pydicom; the result, whose possible range
``[y_min, y_max]`` follows from ``BitsStored``/``PixelRepresentation`` and the rescale (DICOM PS3.3 C.11.2), is
mapped linearly onto 0..65535, and ``MONOCHROME1`` images are inverted so that bright means dense everywhere.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

TYPE_WINDOWS = {"uint8": (0.0, 255.0), "uint16": (0.0, 65535.0), "float32": (0.0, 1.0)}
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".dcm"}
IMAGE_FORMATS = ("PNG", "JPEG", "BMP", "GIF", "TIFF", "WEBP")  # Pillow decoders tried (no EPS, PSD, ...)
MAX_PIXELS = 64_000_000  # refuse to decode images beyond this many pixels (decompression bombs)
DICOM_EXTRA = "pip install 'compressor[dicom]'"
_UINT16_MODES = {"I;16", "I;16L", "I;16B", "I;16N", "I"}


class InputError(ValueError):
    """An input that cannot be turned into a model input: not an image, wrong shape, wrong dtype or range."""


class DecodeError(InputError):
    """A file or array that cannot be decoded without losing precision (the message names it)."""


@dataclass(frozen=True)
class PixelFormat:
    """The pixel type of a data set and its window: pixels ``low..high`` map linearly onto [0, 1].

    Attributes:
        dtype: ``uint8``, ``uint16`` or ``float32`` -- how pixels are stored between decoding and the model.
        window: ``(low, high)`` with ``low < high``; values outside are clipped.
    """

    dtype: str = "uint8"
    window: tuple[float, float] = TYPE_WINDOWS["uint8"]

    def __post_init__(self) -> None:
        if self.dtype not in TYPE_WINDOWS:
            raise ValueError(f"pixel dtype {self.dtype!r} is not one of {', '.join(TYPE_WINDOWS)}")
        low, high = (float(v) for v in self.window)
        if not (np.isfinite(low) and np.isfinite(high) and low < high):
            raise ValueError(f"pixel window {list(self.window)} must be two finite numbers with low < high")
        object.__setattr__(self, "window", (low, high))

    @classmethod
    def type_range(cls, dtype: str) -> PixelFormat:
        """The type's own range as the window (uint8 0..255, uint16 0..65535, float32 0..1)."""
        return cls(dtype, TYPE_WINDOWS[dtype])

    @property
    def numpy_dtype(self) -> np.dtype:
        """The numpy dtype pixels are stored in."""
        return np.dtype(self.dtype)

    def to_unit(self, pixels: np.ndarray) -> np.ndarray:
        """Pixels as float32 in [0, 1]: ``clip((x - low) / (high - low), 0, 1)``, computed in float32.

        ``compressor.data.normalize.to_model_input`` computes the same expression with torch, operation for
        operation, so both give bit-identical inputs (a test checks it).
        """
        low, width = np.float32(self.window[0]), np.float32(self.window[1] - self.window[0])
        x = np.asarray(pixels, dtype=np.float32)
        return np.clip((x - low) / width, np.float32(0.0), np.float32(1.0))

    def as_json(self) -> dict[str, object]:
        """``{"dtype": ..., "window": [low, high]}`` for summaries and ONNX metadata."""
        return {"dtype": self.dtype, "window": [self.window[0], self.window[1]]}

    @classmethod
    def from_json(cls, value: object) -> PixelFormat:
        """Parse ``as_json``'s output.

        Raises:
            ValueError: not such a mapping.
        """
        if not isinstance(value, dict) or set(value) != {"dtype", "window"}:
            raise ValueError(f"pixel format must be {{'dtype', 'window'}}, got {value!r}")
        window = value["window"]
        if not isinstance(window, (list, tuple)) or len(window) != 2:
            raise ValueError(f"pixel window must be [low, high], got {window!r}")
        return cls(str(value["dtype"]), (float(window[0]), float(window[1])))


@dataclass(frozen=True)
class ImageHeader:
    """What a file's header says, read without decoding its pixels."""

    width: int
    height: int
    channels: int  # 1 (grey) or 3 (colour; alpha is dropped)
    dtype: str  # uint8 or uint16


def is_dicom(data: bytes, name: str = "") -> bool:
    """DICOM Part 10 files carry ``DICM`` at byte 128; ``.dcm`` files without the preamble count too."""
    return data[128:132] == b"DICM" or name.lower().endswith(".dcm")


def _read_dicom_dataset(source: bytes | Path, name: str, pixels: bool):
    try:
        import pydicom
    except ImportError:
        raise DecodeError(f"{name}: reading DICOM needs pydicom, the optional extra: {DICOM_EXTRA}") from None
    try:
        handle = io.BytesIO(source) if isinstance(source, bytes) else source
        return pydicom.dcmread(handle, force=True, stop_before_pixels=not pixels)
    except Exception as exc:  # pydicom raises many types for malformed files
        raise DecodeError(f"{name}: not a readable DICOM file ({exc.__class__.__name__}: {exc})") from None


def _dicom_header(ds, name: str) -> ImageHeader:
    try:
        rows, cols, samples = int(ds.Rows), int(ds.Columns), int(ds.get("SamplesPerPixel", 1))
        frames = int(ds.get("NumberOfFrames", 1) or 1)
    except (AttributeError, TypeError, ValueError):
        raise DecodeError(f"{name}: DICOM file without Rows/Columns (no image in it)") from None
    if frames != 1:
        raise DecodeError(f"{name}: DICOM with {frames} frames; one image per file is supported")
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    if samples == 1 and photometric in ("MONOCHROME1", "MONOCHROME2"):
        return ImageHeader(cols, rows, 1, "uint16")
    if samples == 3 and photometric == "RGB" and int(ds.get("BitsAllocated", 8)) == 8:
        return ImageHeader(cols, rows, 3, "uint8")
    raise DecodeError(f"{name}: DICOM {photometric} with {samples} samples per pixel is not supported "
                      "(MONOCHROME1, MONOCHROME2 or 8-bit RGB)")


def _dicom_output_range(ds) -> tuple[float, float]:
    """The range the modality (and VOI) transforms can produce, from the header only (DICOM PS3.3 C.11.2)."""
    if ds.get("ModalityLUTSequence"):
        return 0.0, float(2 ** int(ds.ModalityLUTSequence[0].LUTDescriptor[2]) - 1)
    bits = int(ds.BitsStored)
    low, high = (0, 2**bits - 1) if int(ds.PixelRepresentation) == 0 else (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
    slope, intercept = float(ds.get("RescaleSlope", 1.0) or 1.0), float(ds.get("RescaleIntercept", 0.0) or 0.0)
    return low * slope + intercept, high * slope + intercept


def _decode_dicom(data: bytes, name: str) -> np.ndarray:
    """A DICOM file as ``uint16 H x W x 1`` (monochrome) or ``uint8 H x W x 3`` (RGB); see the module docstring."""
    ds = _read_dicom_dataset(data, name, pixels=True)
    header = _dicom_header(ds, name)
    if header.width * header.height > MAX_PIXELS:
        raise DecodeError(f"{name}: {header.width}x{header.height} pixels exceeds the {MAX_PIXELS} pixel limit")
    from pydicom.pixels import apply_modality_lut, apply_windowing

    try:
        stored = ds.pixel_array
    except Exception as exc:  # missing pixel data, or a compressed transfer syntax without its decoder
        raise DecodeError(f"{name}: cannot decode the DICOM pixel data ({exc.__class__.__name__}: {exc})") from None
    if header.channels == 3:
        return np.ascontiguousarray(stored, dtype=np.uint8)
    try:
        values = apply_windowing(apply_modality_lut(stored, ds).astype(np.float64), ds)
        y_min, y_max = _dicom_output_range(ds)
    except (AttributeError, TypeError, ValueError, IndexError, KeyError) as exc:
        raise DecodeError(f"{name}: inconsistent DICOM pixel module ({exc.__class__.__name__}: {exc})") from None
    if not y_max != y_min:
        raise DecodeError(f"{name}: DICOM rescale gives an empty value range")
    unit = np.clip((np.asarray(values, dtype=np.float64) - y_min) / (y_max - y_min), 0.0, 1.0)
    if str(ds.get("PhotometricInterpretation", "")).upper() == "MONOCHROME1":
        unit = 1.0 - unit  # MONOCHROME1: low values are bright
    return np.rint(unit * 65535.0).astype(np.uint16)[:, :, None]


def _pillow_header(image: Image.Image, name: str) -> ImageHeader:
    """Channels and integer type of an opened Pillow image; refuses what Pillow would truncate."""
    args = [tile[3] if len(tile) > 3 else "" for tile in (image.tile or [])]  # (codec, extents, offset, args)
    rawmodes = [str(a[0] if isinstance(a, tuple) and a else a) for a in args]
    if image.mode in _UINT16_MODES:
        return ImageHeader(image.width, image.height, 1, "uint16")
    if image.mode in ("F", "I;16S", "I;32", "I;32S") or image.mode.startswith("I;"):
        raise DecodeError(f"{name}: {image.mode} images (32-bit or floating point) are not supported; "
                          "save them as 8- or 16-bit")
    if any(";16" in mode or ";32" in mode for mode in rawmodes):
        raise DecodeError(f"{name}: 16-bit colour (or grey + alpha) images would lose precision when decoded; "
                          "save them as 16-bit grayscale or 8-bit colour")
    channels = 1 if image.mode in ("1", "L", "LA", "La") else 3
    return ImageHeader(image.width, image.height, channels, "uint8")


def _open(source: bytes | Path, name: str) -> Image.Image:
    try:
        image = Image.open(io.BytesIO(source) if isinstance(source, bytes) else source, formats=IMAGE_FORMATS)
    except UnidentifiedImageError:
        raise DecodeError(f"{name}: not a decodable image (unknown or corrupt image format)") from None
    except (OSError, Image.DecompressionBombError, SyntaxError, ValueError) as exc:
        raise DecodeError(f"{name}: not a decodable image ({exc.__class__.__name__}: {exc})") from None
    if image.width * image.height > MAX_PIXELS:
        image.close()
        raise DecodeError(f"{name}: {image.width}x{image.height} pixels exceeds the {MAX_PIXELS} pixel limit")
    return image


def read_header(path: Path, name: str | None = None) -> ImageHeader:
    """Size, channels and integer type of an image file, from its header only.

    Raises:
        DecodeError: not an image, too large, a type that would lose precision, or DICOM without pydicom.
    """
    name = name or str(path)
    with _file_errors(name, "image file not found"), open(path, "rb") as handle:
        head = handle.read(132)
    if is_dicom(head, name):
        return _dicom_header(_read_dicom_dataset(path, name, pixels=False), name)
    with _open(path, name) as image:
        return _pillow_header(image, name)


def decode_file(data: bytes, name: str = "image") -> np.ndarray:
    """Encoded image bytes as ``H x W x C`` pixels in the file's own type (``uint8`` or ``uint16``), C in {1, 3}.

    Raises:
        DecodeError: empty, not an image, too many pixels, a type that would lose precision, DICOM without pydicom.
    """
    if not data:
        raise DecodeError(f"{name}: empty image data")
    if is_dicom(data, name):
        return _decode_dicom(data, name)
    with _open(data, name) as image:
        header = _pillow_header(image, name)
        try:
            if header.dtype == "uint16":
                array = np.asarray(image)
            else:
                array = np.asarray(image.convert("L" if header.channels == 1 else "RGB"), dtype=np.uint8)
        except (OSError, SyntaxError, ValueError) as exc:
            raise DecodeError(f"{name}: not a decodable image ({exc.__class__.__name__}: {exc})") from None
    if header.dtype == "uint16" and array.dtype != np.uint16:
        # mode "I" (int32): 16-bit content is accepted, more is refused
        if array.size and (array.min() < 0 or array.max() > 65535):
            raise DecodeError(f"{name}: 32-bit pixel values beyond 0..65535 are not supported")
        array = array.astype(np.uint16)
    return np.ascontiguousarray(array[:, :, None] if array.ndim == 2 else array)


def _luma(hwc: np.ndarray) -> np.ndarray:
    """ITU-R 601-2 luma ``0.299 R + 0.587 G + 0.114 B`` in the pixels' own type (Pillow's for uint8)."""
    if hwc.dtype == np.uint8:
        return np.asarray(Image.fromarray(np.ascontiguousarray(hwc)).convert("L"), dtype=np.uint8)[:, :, None]
    grey = hwc.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    if hwc.dtype == np.uint16:
        return np.clip(np.rint(grey), 0, 65535).astype(np.uint16)[:, :, None]
    return grey.astype(hwc.dtype)[:, :, None]


def _resize(hwc: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear (Pillow, antialiased when shrinking) resize in the pixels' own type: uint8 through Pillow's 8-bit
    modes; uint16 and floats per channel in float32 (mode ``F``), uint16 rounded back."""
    if hwc.shape[:2] == (height, width):
        return hwc
    if hwc.dtype == np.uint8:
        image = Image.fromarray(np.ascontiguousarray(hwc[:, :, 0] if hwc.shape[2] == 1 else hwc))
        array = np.asarray(image.resize((width, height), Image.BILINEAR), dtype=np.uint8)
        return array[:, :, None] if array.ndim == 2 else array
    planes = [np.asarray(Image.fromarray(np.ascontiguousarray(hwc[:, :, c], dtype=np.float32)).resize(
        (width, height), Image.BILINEAR)) for c in range(hwc.shape[2])]
    out = np.stack(planes, axis=-1)
    if hwc.dtype == np.uint16:
        return np.clip(np.rint(out), 0, 65535).astype(np.uint16)
    return out.astype(hwc.dtype)


def conform(hwc: np.ndarray, channels: int | None, size: int | None, name: str = "image") -> np.ndarray:
    """``H x W x C`` pixels (C in 1..4; a 2nd or 4th channel is alpha and dropped) with ``channels`` channels
    (grey <-> RGB) and ``size x size`` pixels (bilinear), in the pixels' own type; None keeps the channels / size.

    Raises:
        DecodeError: an impossible channel conversion.
    """
    have = hwc.shape[2]
    if have in (2, 4):
        hwc = hwc[:, :, : have - 1]
        have -= 1
    if channels is not None and have != channels:
        if channels == 1 and have == 3:
            hwc = _luma(hwc)
        elif channels == 3 and have == 1:
            hwc = np.repeat(hwc, 3, axis=2)
        else:
            raise DecodeError(f"{name}: has {have} channels; cannot convert them to {channels}")
    if size is not None:
        hwc = _resize(hwc, size, size)
    return np.ascontiguousarray(hwc)


def read_bytes(path: Path, name: str | None = None) -> bytes:
    """A file's bytes, with one-line errors for missing files, folders and unreadable files.

    Raises:
        DecodeError: the file cannot be read.
    """
    with _file_errors(name or str(path), "file not found"):
        return Path(path).read_bytes()


@contextlib.contextmanager
def _file_errors(name: str, missing: str) -> Iterator[None]:
    """Turn the OS errors of reading the file ``name`` into one-line ``DecodeError``s (``missing``: the text for a
    file that does not exist)."""
    try:
        yield
    except FileNotFoundError:
        raise DecodeError(f"{name}: {missing}") from None
    except IsADirectoryError:
        raise DecodeError(f"{name}: is a directory, not an image file") from None
    except OSError as exc:
        raise DecodeError(f"{name}: cannot read ({exc.strerror})") from None
