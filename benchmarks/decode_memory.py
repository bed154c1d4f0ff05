"""Peak memory of one server decode against the estimate the server checks before decoding (Linux only).

Usage::

    python benchmarks/decode_memory.py [--side 3000] [--json-mb 8] [--markdown FILE]

For each case (images of ``--side`` x ``--side`` pixels in every accepted format and bit depth, decoded for a
1- and a 3-channel model; JSON bodies of ``--json-mb`` MB built to cost the most per byte), a fresh Python process
reads the encoded bytes, resets its peak resident size (``/proc/self/clear_refs``), runs the server's decode
(``compressor.export.limits.decode_within`` or ``json_batch``, limit disabled) and reports its peak (``VmHWM``)
minus its resident size before. The estimate is ``decode_bytes(image_header(data))`` or ``json_parse_bytes(body)``:
what the server compares with ``--max-image-mb``. A case whose peak exceeds its estimate is flagged; the server's
bound (``max_concurrent_decodes x max_image_bytes``) holds only when none is.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root: tests/ holds the PNG builders

from tests.bad_requests import png_zeros  # noqa: E402

NO_LIMIT = 1 << 62
MODEL_SIZE = 64  # the model's input side: images are resized to it, JSON batches are built at it


def image_cases(side: int) -> dict[str, bytes]:
    """Encoded random images (noise: the decoders cannot shortcut) in each accepted format."""
    rng = np.random.default_rng(0)
    gray8, gray16 = rng.integers(0, 256, (side, side), dtype=np.uint8), rng.integers(0, 65536, (side, side),
                                                                                       dtype=np.uint16)
    rgb = rng.integers(0, 256, (side, side, 3), dtype=np.uint8)
    saves = {"PNG 8-bit gray": (gray8, "PNG", {}), "PNG 16-bit gray": (gray16, "PNG", {}),
             "PNG 8-bit RGB": (rgb, "PNG", {}), "JPEG": (rgb, "JPEG", {}),
             "JPEG progressive": (rgb, "JPEG", {"progressive": True}), "TIFF RGB": (rgb, "TIFF", {}),
             "TIFF RGB, one LZW strip": (rgb, "TIFF", {"compression": "tiff_lzw", "strip_size": 1 << 30}),
             "TIFF 16-bit gray": (gray16, "TIFF", {}), "WebP": (rgb, "WEBP", {"quality": 50}),
             "BMP": (rgb, "BMP", {}), "GIF": (gray8, "GIF", {})}
    cases = {"PNG 16-bit RGBA of zeros": png_zeros(side, side)}
    for name, (array, fmt, options) in saves.items():
        buffer = io.BytesIO()
        Image.fromarray(array).save(buffer, format=fmt, **options)
        cases[name] = buffer.getvalue()
    return cases


def json_cases(megabytes: float, size: int) -> dict[str, bytes]:
    """JSON bodies of about ``megabytes`` MB, each the costliest per byte of its kind to parse: valid batches of
    ``size`` x ``size`` one-channel images (uint8 digits, floats, one-pixel rows) and nests of empty lists."""
    n = int(megabytes * 2**20)

    def batch(layout: tuple[int, ...], value: float, dtype: str) -> bytes:
        def encode(images: int) -> bytes:
            array = np.full((images, *layout), value, dtype=np.uint8 if dtype == "uint8" else np.float64)
            return json.dumps({"inputs": array.tolist(), "dtype": dtype}, separators=(",", ":")).encode()

        return encode(max(1, n // len(encode(1))))

    def nest(unit: bytes) -> bytes:
        return b'{"inputs": [' + unit * ((n - 20) // len(unit)) + unit[:-1] + b"]}"

    return {"JSON uint8 digits, N x 1 x H x W": batch((1, size, size), 0, "uint8"),
            "JSON uint8 one-pixel rows, N x H x W x 1": batch((size, size, 1), 0, "uint8"),
            "JSON float 0.5, N x 1 x H x W": batch((1, size, size), 0.5, "float32"),
            "JSON empty lists": nest(b"[],"), "JSON nested empty lists": nest(b"[[]],")}


def measure_child(path: str, kind: str, channels: int) -> None:
    """(In the child process) decode one case and print its peak memory above the resident size before."""
    from compressor.export.limits import decode_within, json_batch

    data = Path(path).read_bytes()

    def status(key: str) -> int:
        return int(re.search(rf"{key}:\s+(\d+) kB", Path("/proc/self/status").read_text()).group(1)) * 1024

    Path("/proc/self/clear_refs").write_text("5")  # the peak (VmHWM) restarts from the current resident size
    before = status("VmRSS")
    try:
        if kind == "json":
            json_batch(data, channels, MODEL_SIZE, NO_LIMIT)
        else:
            decode_within(data, channels, MODEL_SIZE, "case", NO_LIMIT)
        outcome = "ok"
    except ValueError as exc:  # an InputError: the case was refused after parsing (e.g. a ragged array)
        outcome = f"refused: {str(exc)[:60]}"
    print(json.dumps({"peak": status("VmHWM") - before, "outcome": outcome}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--side", type=int, default=3000, help="image side in pixels")
    parser.add_argument("--json-mb", type=float, default=8.0, help="size of the JSON bodies")
    parser.add_argument("--markdown", type=Path)
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return measure_child(args.child[0], args.child[1], int(args.child[2]))

    from compressor.export.limits import decode_bytes, json_parse_bytes
    from compressor.export.preprocess import image_header

    from compressor.bench.report import cpu_model

    rows, over = [], 0
    cases = [(name, data, "image") for name, data in image_cases(args.side).items()]
    cases += [(name, data, "json") for name, data in json_cases(args.json_mb, MODEL_SIZE).items()]
    with tempfile.TemporaryDirectory() as folder:
        for name, data, kind in cases:
            estimate = json_parse_bytes(data) if kind == "json" else decode_bytes(image_header(data))
            path = Path(folder) / "case"
            path.write_bytes(data)
            for channels in (1, 3) if kind == "image" else (1,):
                out = subprocess.run([sys.executable, __file__, "--child", str(path), kind, str(channels)],
                                     capture_output=True, text=True, check=True)
                result = json.loads(out.stdout.strip().splitlines()[-1])
                over += result["peak"] > estimate
                rows.append(f"| {name} | {len(data) / 2**20:.2f} | {channels} | {result['peak'] / 2**20:.1f} | "
                            f"{estimate / 2**20:.1f} | {result['peak'] / estimate:.2f} | {result['outcome']} |")
    lines = [f"Images {args.side}x{args.side}, JSON bodies of {args.json_mb:g} MB; peak = resident memory above "
             "the size before the decode.", "",
             "| case | body (MiB) | model channels | peak (MiB) | estimate (MiB) | peak / estimate | outcome |",
             "|---|---:|---:|---:|---:|---:|---|", *rows, "",
             f"{over} case(s) above their estimate. Machine: {platform.platform()}, {cpu_model()}, "
             f"{os.cpu_count()} CPUs."]
    text = "\n".join(lines)
    print(text)
    if args.markdown:
        args.markdown.write_text(text + "\n")
    sys.exit(1 if over else 0)


if __name__ == "__main__":
    main()
