"""Hostile and malformed requests to the model server, each with the 4xx status and message it must get.

Shared by the server tests and ``benchmarks/load_test.py`` (which sends them from 32 clients alongside valid
requests). Also the PNG builders they need: a header that announces any size over almost no data, and a real
16-bit RGBA PNG of zeros written row by row (a few hundred KB that decode to hundreds of MB).
"""

from __future__ import annotations

import io
import json
import struct
import zlib
from dataclasses import dataclass, field

import numpy as np
from PIL import Image


@dataclass(frozen=True)
class BadRequest:
    """One request (httpx keyword arguments) and what the server must answer."""

    name: str
    args: dict
    status: int
    message: str  # a part of the answer's ``detail``
    method: str = "POST"
    path: str = "/predict"
    params: dict = field(default_factory=dict)


def png_bytes(image: np.ndarray) -> bytes:
    """``image`` (uint8 or uint16, 2-D or H x W x C) as PNG."""
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_header(width: int, height: int, depth: int = 16, color: int = 6) -> bytes:
    """A PNG whose header announces ``width x height`` (16-bit RGBA by default) over one row of pixel data."""
    ihdr = struct.pack(">IIBBBBB", width, height, depth, color, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(bytes(64))) + _chunk(
        b"IEND", b"")


def png_zeros(width: int, height: int, depth: int = 16, color: int = 6) -> bytes:
    """A complete PNG of zeros (16-bit RGBA by default), compressed row by row so no image is held in memory:
    7900 x 7900 takes 485 KB and decodes to 62 Mpixels."""
    channels = {0: 1, 2: 3, 4: 2, 6: 4}[color]
    row, packer = bytes(1 + width * channels * depth // 8), zlib.compressobj(9)
    idat = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, depth, color, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


def _json(body: bytes | str) -> dict:
    return {"content": body.encode() if isinstance(body, str) else body,
            "headers": {"content-type": "application/json"}}


def _raw(body: bytes, content_type: str = "image/png") -> dict:
    return {"content": body, "headers": {"content-type": content_type}}


def _multipart(body: bytes, boundary: str | None = "XyZ") -> dict:
    suffix = f"; boundary={boundary}" if boundary else ""
    return {"content": body, "headers": {"content-type": f"multipart/form-data{suffix}"}}


def bad_requests(channels: int, size: int, max_body: int, max_images: int, bomb: bytes | None = None
                 ) -> list[BadRequest]:
    """The catalogue, for a model taking ``channels x size x size`` images and a server with these limits.

    Args:
        bomb: the 16-bit RGBA PNG announcing 7900 x 7900 to send (default: header only; ``png_zeros(7900, 7900)``
            is the real 485 KB file).
    """
    good = png_bytes(np.zeros((size, size), dtype=np.uint8))
    image = np.zeros((size, size)).tolist()
    nested = "[" * 5000 + "]" * 5000
    bomb = bomb if bomb is not None else png_header(7900, 7900)
    corrupt = bytearray(png_bytes(np.arange(size * size, dtype=np.uint8).reshape(size, size)))
    corrupt[-20] ^= 0xFF  # inside the IDAT data: its CRC no longer matches
    return [
        # JSON syntax and structure
        BadRequest("JSON nested 5,000 deep (10 KB)", _json('{"inputs": ' + nested + "}"), 422, "nests"),
        BadRequest("JSON of open brackets only", _json("[" * min(100_000, max_body)), 422, "nests"),
        BadRequest("JSON object nested 3,000 deep", _json('{"a": ' * 3000 + "1" + "}" * 3000), 422, "nests"),
        BadRequest("invalid JSON", _json("{inputs: [1, 2"), 422, "not valid JSON"),
        BadRequest("JSON not UTF-8", _json(b'{"inputs": "\xff\xfe"}'), 422, "not valid JSON"),
        BadRequest("JSON whitespace only", _json("   "), 422, "not valid JSON"),
        BadRequest("JSON array at the top", _json("[[0.5]]"), 422, "must be an object"),
        BadRequest("JSON without inputs", _json('{"images": [[0]]}'), 422, "must be an object"),
        BadRequest("JSON unknown field", _json(json.dumps({"inputs": image, "extra": 1})), 422, "unknown JSON field"),
        BadRequest("JSON duplicate field", _json('{"inputs": [[0]], "inputs": [[1]]}'), 422, "duplicate"),
        BadRequest("JSON many fields", _json("{" + ",".join(f'"k{i}": 0' for i in range(40)) + "}"), 422,
                   "too many"),
        BadRequest("dtype a list", _json(json.dumps({"inputs": image, "dtype": []})), 422, "dtype"),
        BadRequest("dtype float64", _json(json.dumps({"inputs": image, "dtype": "float64"})), 422, "dtype"),
        # JSON values
        BadRequest("ragged array", _json('{"inputs": [[0.1, 0.2], [0.3]]}'), 422, "rectangular"),
        BadRequest("strings as pixels", _json(json.dumps({"inputs": [["0.5"] * size] * size})), 422,
                   "numbers only"),
        BadRequest("booleans as pixels", _json(json.dumps({"inputs": [[True] * size] * size})), 422, "numbers only"),
        BadRequest("null inputs", _json('{"inputs": null}'), 422, "numbers only"),
        BadRequest("object inputs", _json('{"inputs": {"a": 1}}'), 422, "numbers only"),
        BadRequest("NaN pixels", _json(json.dumps({"inputs": [[float("nan")] * size] * size})), 422, "NaN"),
        BadRequest("Infinity pixels", _json(json.dumps({"inputs": [[float("inf")] * size] * size})), 422, "NaN"),
        BadRequest("1e999 pixels", _json('{"inputs": [' + ",".join(["[" + ",".join(["1e999"] * size) + "]"] * size)
                                         + "]}"), 422, "NaN"),
        BadRequest("1e300 pixels", _json(json.dumps({"inputs": [[1e300] * size] * size})), 422, "[0, 1]"),
        BadRequest("5,000-digit integer", _json('{"inputs": [[' + "9" * 5000 + "]]}"), 422, "not valid JSON"),
        BadRequest("uint8 of 300", _json(json.dumps({"inputs": [[300] * size] * size, "dtype": "uint8"})), 422,
                   "0..255"),
        BadRequest("uint8 of 1e30", _json(json.dumps({"inputs": [[1e30] * size] * size, "dtype": "uint8"})), 422,
                   "0..255"),
        BadRequest("uint8 of 0.5", _json(json.dumps({"inputs": [[0.5] * size] * size, "dtype": "uint8"})), 422,
                   "0..255"),
        BadRequest("negative floats", _json(json.dumps({"inputs": [[-0.5] * size] * size})), 422, "[0, 1]"),
        BadRequest("floats above 1", _json(json.dumps({"inputs": [[2.0] * size] * size})), 422, "[0, 1]"),
        # JSON shapes
        BadRequest("scalar inputs", _json('{"inputs": 3}'), 422, "expected one image"),
        BadRequest("1-D inputs", _json(json.dumps({"inputs": [0.5] * size * size})), 422, "expected one image"),
        BadRequest("5-D inputs", _json(json.dumps({"inputs": [[[image]]]})), 422, "expected one image"),
        BadRequest("empty inputs", _json('{"inputs": []}'), 422, "expected one image"),
        BadRequest("empty rows", _json('{"inputs": [[]]}'), 422, "empty"),
        BadRequest("empty uint8 batch", _json('{"inputs": [[[[]]]], "dtype": "uint8"}'), 422, "empty"),
        BadRequest("wrong size", _json(json.dumps({"inputs": np.zeros((size, size - 1)).tolist()})), 422,
                   "the model takes"),
        BadRequest("wrong channels", _json(json.dumps({"inputs": np.zeros((size, size, 2)).tolist()})), 422,
                   "cannot read an image"),
        BadRequest("too many images", _json(json.dumps({"inputs": np.zeros((max_images + 1, channels, size, size),
                                                                           dtype=np.uint8).tolist(),
                                                        "dtype": "uint8"})), 413, "limit"),
        # bodies and content types
        BadRequest("empty body", _raw(b""), 400, "empty request body"),
        BadRequest("empty JSON body", _json(b""), 400, "empty request body"),
        BadRequest("no content type", {"content": b"hello"}, 415, "unsupported content type"),
        BadRequest("text/plain", _raw(b"hello", "text/plain"), 415, "unsupported content type"),
        BadRequest("control characters as content type", _raw(b"hello", "\x01\x02"), 415,
                   "unsupported content type"),
        BadRequest("Content-Length over the limit",
                   {"content": good, "headers": {"content-type": "image/png", "content-length": str(max_body + 1)}},
                   413, "byte limit"),
        # multipart
        BadRequest("multipart without boundary", _multipart(b"--XyZ\r\n", None), 400, "malformed multipart"),
        BadRequest("multipart garbage", _multipart(b"this is not multipart at all"), 400, "malformed multipart"),
        BadRequest("multipart part without name", _multipart(b"--XyZ\r\n\r\nabc\r\n--XyZ--\r\n"), 400,
                   "malformed multipart"),
        BadRequest("multipart truncated", _multipart(
            b'--XyZ\r\nContent-Disposition: form-data; name="f"; filename="a.png"\r\n\r\n' + good[:30]), 422,
            "no file field"),
        BadRequest("multipart without file", {"data": {"note": "hello"}, "files": [("other", ("", b"", ""))]},
                   422, "no file field"),
        BadRequest("multipart empty file", {"files": {"file": ("a.png", b"", "image/png")}}, 422, "empty image"),
        BadRequest("multipart truncated PNG", {"files": {"file": ("a.png", good[:40], "image/png")}}, 422,
                   "not a decodable image"),
        BadRequest("multipart text file", {"files": {"file": ("a.txt", b"hello world", "text/plain")}}, 422,
                   "not a decodable image"),
        BadRequest("multipart too many files", {"files": [("file", (f"{i}.png", good, "image/png"))
                                                          for i in range(max_images + 1)]}, 413, "limit"),
        # raw image bodies
        BadRequest("truncated PNG", _raw(good[:40]), 422, "not a decodable image"),
        BadRequest("PNG with a corrupt chunk", _raw(bytes(corrupt)), 422, "not a decodable image"),
        BadRequest("non-image bytes", _raw(b"GIF89a garbage " * 10), 422, "not a decodable image"),
        BadRequest("zero bytes", _raw(bytes(1000), "application/octet-stream"), 422, "not a decodable image"),
        BadRequest("PNG announcing 0x0", _raw(png_header(0, 0, 8, 0)), 422, "not a decodable image"),
        BadRequest("EPS (a format not accepted)", _raw(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n"),
                   422, "not a decodable image"),
        BadRequest("7900x7900 16-bit RGBA PNG", _raw(bomb), 413, "to decode"),
        BadRequest("PNG announcing 10^10 pixels", _raw(png_header(100_000, 100_000)), 422, "pixels"),
        # query and routes
        BadRequest("negative top_k", _raw(good), 422, "greater than or equal", params={"top_k": -1}),
        BadRequest("top_k not a number", _raw(good), 422, "valid integer", params={"top_k": "abc"}),
        BadRequest("top_k of 10^30", _raw(good), 422, "less than or equal", params={"top_k": 10**30}),
        BadRequest("GET /predict", {}, 405, "Method Not Allowed", method="GET"),
        BadRequest("POST /health", {}, 405, "Method Not Allowed", path="/health"),
        BadRequest("unknown path", {}, 404, "Not Found", method="GET", path="/../../etc/passwd"),
        BadRequest("metrics in an unknown format", {}, 422, "format", method="GET", path="/metrics",
                   params={"format": "xml"}),
    ]
