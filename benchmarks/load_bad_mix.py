"""The bad-input half of ``load_test.py --bad-inputs``: hostile requests on the wire, and the server's memory.

The requests are ``tests/bad_requests.py``'s catalogue (every case with the 4xx it must get), with the real
485 KB PNG that decodes to a 7900 x 7900 16-bit RGBA image, plus clients that disconnect half-way through their
body. Each bad request goes on a connection of its own (a server may close a connection after refusing a body it
did not read). The valid mix gains the largest accepted images: a 16-bit RGBA PNG of zeros as large as
``--max-image-mb`` allows (a few KB on the wire, tens of MB decoded), so the decode bound is exercised.
"""

from __future__ import annotations

import asyncio
import math
import re
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root: tests/ holds the catalogue

from tests.bad_requests import BadRequest, bad_requests, png_header, png_zeros  # noqa: E402

DISCONNECT = "client disconnects mid-body"
TIMEOUT_S = 60.0


@dataclass
class WireCase:
    """One request as the bytes to send, and the status it must get (None: the client leaves before an answer)."""

    name: str
    data: bytes
    status: int | None


def wire_bytes(url: str, method: str, path: str, args: dict, params: dict | None = None, keep_alive: bool = True
               ) -> bytes:
    """The bytes of one HTTP/1.1 request, encoded by httpx (headers given in ``args`` are kept as they are)."""
    request = httpx.Request(method, f"{url}{path}", params=params or None, **args)
    body = request.read()
    target = request.url.raw_path.decode("latin-1")
    headers = dict(request.headers)
    if not keep_alive:
        headers["connection"] = "close"
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    return f"{method} {target} HTTP/1.1\r\n{head}\r\n".encode("latin-1") + body


def bad_cases(url: str, meta: dict, max_body: int, max_images: int) -> list[WireCase]:
    """The catalogue for this model and server, on the wire, plus a client that leaves half-way through."""
    catalogue: list[BadRequest] = bad_requests(int(meta["input_channels"]), int(meta["input_size"]), max_body,
                                               max_images, bomb=png_zeros(7900, 7900))
    cases = [WireCase(case.name, wire_bytes(url, case.method, case.path, case.args, case.params, keep_alive=False),
                      case.status) for case in catalogue]
    partial = wire_bytes(url, "POST", "/predict", {"content": bytes(1000), "headers": {
        "content-type": "image/png", "content-length": "200000"}})
    return [*cases, WireCase(DISCONNECT, partial, None)]


def largest_accepted_png(max_image_bytes: int) -> bytes:
    """The largest square 16-bit RGBA PNG of zeros the server accepts: its decode estimate just within the limit."""
    from compressor.export.limits import CONVERTED_BYTES_PER_PIXEL, DECODE_OVERHEAD_BYTES, decode_bytes
    from compressor.export.preprocess import image_header

    side = math.isqrt((max_image_bytes - DECODE_OVERHEAD_BYTES) // (8 + CONVERTED_BYTES_PER_PIXEL))  # 8 bytes/pixel
    assert decode_bytes(image_header(png_header(side, side))) <= max_image_bytes
    return png_zeros(side, side)


async def one_shot(host: str, port: int, data: bytes) -> int:
    """Send one request on a fresh connection, read the whole answer, close; returns the status."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(data)
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        length = next((int(v) for k, _, v in (line.partition(":") for line in lines[1:])
                       if k.lower() == "content-length"), None)
        await (reader.readexactly(length) if length is not None else reader.read())
        return int(lines[0].split(" ", 2)[1])
    finally:
        writer.close()


async def leave_mid_body(host: str, port: int, data: bytes) -> None:
    """Send the head and part of a body that announces more, then close the connection."""
    _, writer = await asyncio.open_connection(host, port)
    writer.write(data)
    await writer.drain()
    writer.close()


async def send_bad(host: str, port: int, case: WireCase) -> int | None:
    """One bad request; its status, 0 when no answer came (refused, reset or timed out), None for a disconnect."""
    try:
        if case.status is None:
            await asyncio.wait_for(leave_mid_body(host, port, case.data), TIMEOUT_S)
            return None
        return await asyncio.wait_for(one_shot(host, port, case.data), TIMEOUT_S)
    except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, asyncio.TimeoutError, ValueError):
        return 0


class MemorySampler:
    """Samples a process's resident memory (``/proc/<pid>/status`` VmRSS) every ``interval`` seconds on a thread,
    and reads the kernel's own peak (VmHWM) after resetting it (``/proc/<pid>/clear_refs``) where permitted."""

    def __init__(self, pid: int, interval: float = 0.005):
        self.pid, self.interval = pid, interval
        self.samples: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.hwm_reset = False

    def status(self, key: str) -> int | None:
        """``key`` (VmRSS, VmHWM) of the process in bytes; None when it cannot be read."""
        try:
            match = re.search(rf"{key}:\s+(\d+) kB", Path(f"/proc/{self.pid}/status").read_text())
        except OSError:
            return None
        return int(match.group(1)) * 1024 if match else None

    def __enter__(self) -> MemorySampler:
        try:
            Path(f"/proc/{self.pid}/clear_refs").write_text("5")  # VmHWM restarts from the current VmRSS
            self.hwm_reset = True
        except OSError:
            pass
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            value = self.status("VmRSS")
            if value is not None:
                self.samples.append(value)
            time.sleep(self.interval)

    @property
    def peak(self) -> int | None:
        """The largest sample."""
        return max(self.samples, default=None)
