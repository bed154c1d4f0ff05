"""Memory bounds of the server: what one image decode or JSON parse may cost, and how many run at once.

Every decode (an encoded image, or a JSON body parsed into an array) runs in one of ``max_concurrent_decodes``
slots, and is refused (413) when its estimated memory exceeds ``max_image_bytes``, so decoding never holds more than
``max_concurrent_decodes x max_image_bytes`` at once. The estimates are read before anything is decoded:

* an image: ``width x height x (decoded bytes per pixel + 4) + 4 MiB`` from its header (``ImageHeader``: the file's
  bit depth x channels, at least Pillow's storage of the decoded mode, plus buffers the decoder holds); the ``+ 4``
  is the copy converted to the model's mode (Pillow's ``L`` takes 1 byte per pixel, ``RGB`` 4), the 4 MiB the
  buffers that do not grow with the image (measured: 1-2 MiB);
* a JSON body: the Python objects ``json.loads`` builds for it (each ``[`` or ``{`` a list or dict of at most
  128 bytes with its slot in the parent; each ``,`` one more number: a float object, its slot and its copies in the
  float64, float32 and model-input arrays, 56 bytes; strings up to 4 bytes per body byte) and 4 MiB. Before that,
  the body's nesting must stay within ``MAX_JSON_DEPTH`` (an object holding a 4-D array: no parse recurses deeply)
  and it may hold only a few strings and fields (a request has 3 and 2), counted on the bytes.

``benchmarks/decode_memory.py`` measures the peak memory of decoding against these estimates.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import json
import re
from collections.abc import Callable
from typing import TypeVar

import numpy as np
from starlette.concurrency import run_in_threadpool

from .decode import PixelFormat
from .preprocess import ImageHeader, InputError, decode_image, image_header, to_model_input

T = TypeVar("T")
CONVERTED_BYTES_PER_PIXEL = 4  # the image converted to the model's mode (Pillow L: 1 byte, RGB: 4)
DECODE_OVERHEAD_BYTES = 4 << 20  # per decode, independent of the image size
MAX_JSON_DEPTH = 6  # {"inputs": N x C x H x W} nests 5 deep; one more level still gets a clear shape message
JSON_CONTAINER_BYTES = 128  # a list or dict json.loads builds: object, slot in its parent, over-allocation
JSON_VALUE_BYTES = 56  # a number: float object (24) + list slot (8) + float64, float32 and model-input copies (24)
JSON_STRING_BYTES = 4  # per body byte: a str holding a character beyond U+FFFF stores every character in 4 bytes
MAX_JSON_STRINGS, MAX_JSON_FIELDS = 32, 16  # a valid body has 3 strings and 2 fields: more cannot be a request
JSON_DTYPES = ("float32", "uint8")
_LITERAL = re.compile(rb"\b(?:true|false|null)\b")


class OverLimit(InputError):
    """An input that would take more memory to decode than the server allows (answered 413)."""


def decode_bytes(header: ImageHeader) -> int:
    """Estimated peak memory of decoding an image with this header and converting it to the model's mode."""
    return header.pixels * (header.bytes_per_pixel + CONVERTED_BYTES_PER_PIXEL) + DECODE_OVERHEAD_BYTES


def decode_within(data: bytes, channels: int, size: int, name: str, max_bytes: int,
                  header: ImageHeader | None = None, pixel_format: PixelFormat | None = None) -> np.ndarray:
    """``decode_image`` after checking, on the header, that decoding stays within ``max_bytes``.

    Args:
        header: ``image_header(data)`` when it was already read (else it is read here).
        pixel_format: the model's pixel type and window (None: 8-bit, 0..255).

    Raises:
        OverLimit: the image would take more than ``max_bytes`` to decode.
        InputError: not a decodable image (see ``decode_image``).
    """
    header = header or image_header(data)
    if header is not None and decode_bytes(header) > max_bytes:
        raise OverLimit(
            f"{name}: a {header.width}x{header.height} {header.format} image with {header.bytes_per_pixel} bytes per "
            f"decoded pixel takes about {decode_bytes(header) / 2**20:.0f} MiB to decode; the limit is "
            f"{max_bytes / 2**20:.0f} MiB per image (send a smaller image)")
    return decode_image(data, channels, size, name, pixel_format)


def json_depth(body: bytes, chunk: int = 1 << 20) -> int:
    """Deepest nesting of ``[`` / ``{`` in ``body`` (brackets inside strings count too: a valid request has none).

    A running sum over the bytes, in chunks, so its memory stays small however long the body.
    """
    step = np.zeros(256, dtype=np.int8)
    step[[ord("["), ord("{")]] = 1
    step[[ord("]"), ord("}")]] = -1
    data = np.frombuffer(body, dtype=np.uint8)
    depth = deepest = 0
    for start in range(0, len(data), chunk):
        levels = np.cumsum(step[data[start : start + chunk]], dtype=np.int32) + depth
        deepest, depth = max(deepest, int(levels.max())), int(levels[-1])
    return deepest


def json_parse_bytes(body: bytes) -> int:
    """Estimated peak memory of parsing ``body`` and turning its numbers into the model's input (an upper bound
    measured on the worst cases: nests of empty lists, one-digit numbers, floats; see the module docstring)."""
    containers = body.count(b"[") + body.count(b"{")
    values = body.count(b",") + 1
    return (containers * JSON_CONTAINER_BYTES + values * JSON_VALUE_BYTES + len(body) * JSON_STRING_BYTES
            + DECODE_OVERHEAD_BYTES)


def _reject_duplicates(pairs: list[tuple[str, object]]) -> dict:
    """``dict(pairs)``, refusing a field given twice (JSON would silently keep the last)."""
    seen: set[str] = set()
    for key, _ in pairs:
        if key in seen:
            raise InputError(f"duplicate JSON field {key[:40]!r}")
        seen.add(key)
    return dict(pairs)


def _check_json_size(body: bytes, max_bytes: int) -> None:
    """Refuse, from the bytes alone, bodies that cannot be a request or would cost too much to parse."""
    depth = json_depth(body)
    if depth > MAX_JSON_DEPTH:
        raise InputError(f"JSON body nests {depth} levels deep; at most {MAX_JSON_DEPTH} are accepted "
                         '({"inputs": ...} holds at most a 4-D array)')
    if body.count(b'"') > 2 * MAX_JSON_STRINGS:
        raise InputError("JSON body holds too many strings: inputs must hold numbers only")
    if body.count(b":") > MAX_JSON_FIELDS:
        raise InputError("JSON body has too many fields (allowed: inputs, dtype)")
    if json_parse_bytes(body) > max_bytes:
        raise OverLimit(f"this JSON body takes about {json_parse_bytes(body) / 2**20:.0f} MiB to parse; the limit is "
                        f"{max_bytes / 2**20:.0f} MiB per request (send fewer images, or PNG files)")


def json_batch(body: bytes, channels: int, size: int, max_bytes: int,
               pixel_format: PixelFormat | None = None) -> np.ndarray:
    """``{"inputs": ..., "dtype": ...}`` as a checked ``float32 [N, C, H, W]`` batch (no resizing); integer inputs
    are raw pixels through ``pixel_format``'s window (the model's; None: 8-bit, 0..255).

    Raises:
        OverLimit: parsing would take more than ``max_bytes``.
        InputError: anything else wrong with the body (not JSON, nested too deep, wrong fields, shape, dtype, range).
    """
    _check_json_size(body, max_bytes)
    try:
        payload = json.loads(body, object_pairs_hook=_reject_duplicates)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        if isinstance(exc, InputError):
            raise
        raise InputError(f"body is not valid JSON ({str(exc)[:200]})") from None
    if not isinstance(payload, dict) or "inputs" not in payload:
        raise InputError('JSON body must be an object {"inputs": array, "dtype": "float32" | "uint8"}')
    unknown = set(payload) - {"inputs", "dtype"}
    if unknown:
        raise InputError(f"unknown JSON field(s): {', '.join(sorted(unknown))[:200]} (allowed: inputs, dtype)")
    dtype = payload.get("dtype", "float32")
    if not isinstance(dtype, str) or dtype not in JSON_DTYPES:
        raise InputError(f"dtype {str(dtype)[:40]!r} is not supported (use one of {', '.join(JSON_DTYPES)})")
    if body.count(b'"') > 2 * len(payload) + ("dtype" in payload) * 2 or _LITERAL.search(body):
        raise InputError("inputs must hold numbers only (not strings, true, false or null)")
    try:
        array = np.asarray(payload["inputs"], dtype=np.float64)
    except (ValueError, TypeError, OverflowError):
        raise InputError("inputs must be a rectangular nested array of numbers (wrong shape or non-numbers)") from None
    if array.ndim not in (2, 3, 4):
        raise InputError(f"inputs has shape {array.shape}: expected one image (2-D or 3-D) or a batch (4-D)")
    if array.size == 0:
        raise InputError(f"inputs is empty (shape {array.shape})")
    if dtype == "uint8":
        if not np.isfinite(array).all() or (array != np.rint(array)).any() or array.min() < 0 or array.max() > 255:
            raise InputError("dtype uint8 needs integer values in 0..255")
        array = array.astype(np.uint8)
    else:
        if not np.isfinite(array).all():
            raise InputError("inputs: contains NaN or infinite values")
        if np.abs(array).max() > np.finfo(np.float32).max:
            raise InputError("inputs: float pixels must lie in [0, 1] (got numbers beyond float32's range)")
        array = array.astype(np.float32)
    return to_model_input(array, channels, size, resize=False, name="inputs", pixel_format=pixel_format)


class DecodeSlots:
    """At most ``limit`` decodes at once (an asyncio semaphore, used from the event loop), with counts for
    ``/metrics``. A decode holds its slot until its worker thread is done, even when the request is cancelled."""

    def __init__(self, limit: int):
        if limit < 1:
            raise ValueError(f"the number of concurrent decodes must be >= 1 (got {limit})")
        self.limit = limit
        self._semaphore = asyncio.Semaphore(limit)
        self.running = self.waiting = self.peak = self.total = 0

    async def run(self, inline: bool, work: Callable[[], T]) -> T:
        """``work()`` in a slot: on the event loop when ``inline`` (small inputs: the hop to a thread would cost
        more than the work), else on the thread pool (anyio waits for the thread even when cancelled)."""
        self.waiting += 1
        try:
            await self._semaphore.acquire()
        finally:
            self.waiting -= 1
        self.running += 1
        self.total += 1
        self.peak = max(self.peak, self.running)
        try:
            return work() if inline else await run_in_threadpool(work)
        finally:
            self.running -= 1
            self._semaphore.release()

    def snapshot(self) -> dict[str, int]:
        """JSON-ready counts: slots, running and waiting decodes, the most at once, the total."""
        return {"slots": self.limit, "running": self.running, "waiting": self.waiting, "peak_running": self.peak,
                "total": self.total}


def return_freed_memory_to_os(threshold: int = 1 << 20) -> bool:
    """Make glibc serve allocations of ``threshold`` bytes and more with ``mmap``, so freeing a decoded image hands
    its memory back to the system at once (by default glibc raises the threshold after each large free, and the
    memory of later large images then stays in per-thread heaps: resident after the decodes are over).

    Returns:
        Whether the setting was applied (False off glibc).
    """
    with contextlib.suppress(OSError, AttributeError, TypeError):
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        m_mmap_threshold = -3  # glibc's mallopt parameter number; setting it also turns the dynamic threshold off
        return bool(libc.mallopt(m_mmap_threshold, int(threshold)))
    return False
