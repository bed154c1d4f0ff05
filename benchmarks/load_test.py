"""Bounded load test of ``compressor serve`` on loopback: requests/s, p50/p99 latency and errors per concurrency.

Usage::

    python benchmarks/load_test.py MODEL.onnx [--concurrency 1,8,32] [--requests 300] [--max-seconds 30]
        [--payload png|raw|json] [--max-batch-size 32] [--max-wait-ms 5] [--url URL] [--markdown FILE] [--json FILE]

Without ``--url`` a fresh server is started for each level (``python -m compressor serve MODEL --port <free
port>``, loopback) and stopped after it, so its ``/metrics`` describe that level only. For each concurrency
level C, C client tasks (a minimal asyncio HTTP/1.1 client, one keep-alive connection each, requests
pre-encoded by httpx) send ``POST /predict`` back to back until ``--requests`` requests were sent or
``--max-seconds`` passed, after 10 warm-up requests. Each request carries one random ``uint8`` image of the
model's size (PNG as a multipart upload or as the raw body, or JSON ``{"inputs": ..., "dtype": "uint8"}``) from
a pool of 64. Latency is measured per request with
``time.perf_counter`` from send to full response; a request errs when it raises or its status is not 200.

Requests/s = completed requests / wall time of the level. The server's ``/metrics`` before and after each level
give the mean number of requests per onnxruntime batch, and its server-side ``/predict`` latency percentiles
(body read, decode, batching wait, inference, answer; latest 2048 requests, warm-up included). When the server
is started here, its CPU time (``/proc``) over the level divided by the requests gives CPU ms per request.
Client and server share the machine's cores, so client-side latency also holds the client's own queueing.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import platform
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

WARMUP = 10


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds used so far by process ``pid`` (Linux ``/proc``; None elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime in clock ticks


def start_server(model: Path, port: int, max_batch_size: int, max_wait_ms: float) -> subprocess.Popen:
    """``compressor serve`` in a subprocess; returns once ``/health`` answers."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "compressor", "serve", str(model), "--port", str(port), "--log-level", "warning",
         "--max-batch-size", str(max_batch_size), "--max-wait-ms", str(max_wait_ms)],
        env={**os.environ, "COMPRESSOR_QUIET": "1"},
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"the server exited with status {proc.returncode}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return proc
        except httpx.TransportError:
            time.sleep(0.2)
    proc.terminate()
    sys.exit("the server did not become healthy within 120 s")


def payloads(meta: dict, kind: str, count: int = 64) -> list[dict]:
    """httpx request arguments for ``count`` random images of the model's shape."""
    rng = np.random.default_rng(0)
    c, s = int(meta["input_channels"]), int(meta["input_size"])
    out = []
    for _ in range(count):
        image = rng.integers(0, 256, size=(s, s, c), dtype=np.uint8)
        if kind == "json":
            out.append({"json": {"inputs": image.tolist(), "dtype": "uint8"}})
            continue
        buffer = io.BytesIO()
        Image.fromarray(image[..., 0] if c == 1 else image).save(buffer, format="PNG")
        if kind == "raw":
            out.append({"content": buffer.getvalue(), "headers": {"content-type": "image/png"}})
        else:
            out.append({"files": {"file": ("image.png", buffer.getvalue(), "image/png")}})
    return out


def wire_request(url: str, args: dict) -> bytes:
    """The bytes of one ``POST /predict`` HTTP/1.1 request (keep-alive), encoded by httpx once, sent many times."""
    request = httpx.Request("POST", f"{url}/predict", **args)
    body = request.read()
    head = "".join(f"{k}: {v}\r\n" for k, v in request.headers.items())
    return f"POST /predict HTTP/1.1\r\n{head}\r\n".encode() + body


async def exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, data: bytes) -> int:
    """Send one request on an open connection and read the whole response; returns the status code."""
    writer.write(data)
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    length = next(int(v) for k, _, v in (line.partition(":") for line in lines[1:]) if k.lower() == "content-length")
    await reader.readexactly(length)
    return int(lines[0].split(" ", 2)[1])


async def level(url: str, wire: list[bytes], concurrency: int, requests: int, max_seconds: float) -> dict:
    """Run one concurrency level: ``concurrency`` keep-alive connections, each sending requests back to back.

    A minimal asyncio HTTP/1.1 client (pre-encoded requests, Content-Length responses) keeps the client's own CPU
    cost per request small, since it shares the cores with the server.
    """
    host, port = url.removeprefix("http://").rstrip("/").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    for i in range(WARMUP):
        await exchange(reader, writer, wire[i % len(wire)])
    writer.close()
    before = httpx.get(f"{url}/metrics", timeout=30).json()["batching"]
    latencies: list[float] = []
    errors = 0
    sent = 0
    stop = time.perf_counter() + max_seconds

    async def worker() -> None:
        nonlocal sent, errors
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            while sent < requests and time.perf_counter() < stop:
                data = wire[sent % len(wire)]
                sent += 1
                start = time.perf_counter()
                try:
                    ok = await exchange(reader, writer, data) == 200
                except (OSError, asyncio.IncompleteReadError, ValueError, StopIteration):
                    ok = False
                    writer.close()
                    reader, writer = await asyncio.open_connection(host, int(port))
                if ok:
                    latencies.append(time.perf_counter() - start)
                else:
                    errors += 1
        finally:
            writer.close()

    began = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall = time.perf_counter() - began
    metrics = httpx.get(f"{url}/metrics", timeout=30).json()
    after, server = metrics["batching"], metrics["predict_latency_ms"]
    batches = after["batches"] - before["batches"]
    ms = np.asarray(latencies) * 1e3
    return {
        "concurrency": concurrency, "requests": sent, "completed": len(latencies), "errors": errors,
        "seconds": wall, "requests_per_s": len(latencies) / wall if wall else 0.0,
        "p50_ms": float(np.percentile(ms, 50)) if len(ms) else None,
        "p99_ms": float(np.percentile(ms, 99)) if len(ms) else None,
        "mean_requests_per_batch": (after["requests"] - before["requests"]) / batches if batches else None,
        "server_p50_ms": server["p50"], "server_p99_ms": server["p99"], "server_window": server["window"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("--url", help="an already running server (default: start one on a free loopback port)")
    parser.add_argument("--concurrency", default="1,8,32")
    parser.add_argument("--requests", type=int, default=300, help="requests per level (upper bound)")
    parser.add_argument("--max-seconds", type=float, default=30.0, help="time bound per level")
    parser.add_argument("--payload", choices=("png", "raw", "json"), default="png",
                        help="png: multipart upload; raw: PNG as the body (image/png); json: uint8 array")
    parser.add_argument("--max-batch-size", type=int, default=32)
    parser.add_argument("--max-wait-ms", type=float, default=5.0)
    parser.add_argument("--markdown", type=Path)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    levels = [int(c) for c in args.concurrency.split(",")]

    results = []
    for concurrency in levels:
        proc, url = None, args.url
        if url is None:  # a fresh server per level, so its /metrics describe this level only
            port = free_port()
            proc = start_server(args.model, port, args.max_batch_size, args.max_wait_ms)
            url = f"http://127.0.0.1:{port}"
        try:
            bodies = payloads(httpx.get(f"{url}/metadata", timeout=10).json(), args.payload)
            wire = [wire_request(url, body) for body in bodies]
            before = cpu_seconds(proc.pid) if proc else None
            result = asyncio.run(level(url, wire, concurrency, args.requests, args.max_seconds))
            after = cpu_seconds(proc.pid) if proc else None
            # Server CPU per answered request over the level (warm-up and /metrics calls included, ~12 requests).
            result["server_cpu_ms_per_request"] = (
                1e3 * (after - before) / (result["completed"] + WARMUP) if before is not None and after is not None
                and result["completed"] else None)
            results.append(result)
        finally:
            if proc is not None:
                proc.terminate()
                proc.wait(30)

    lines = ["| concurrency | requests | completed | errors | requests/s | p50 (ms) | p99 (ms) | server p50 (ms) "
             "| server p99 (ms) | requests per batch | server CPU per request (ms) |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    fmt = lambda v, spec: "-" if v is None else format(v, spec)  # noqa: E731
    for r in results:
        lines.append(f"| {r['concurrency']} | {r['requests']} | {r['completed']} | {r['errors']} | "
                     f"{r['requests_per_s']:.1f} | {fmt(r['p50_ms'], '.2f')} | {fmt(r['p99_ms'], '.2f')} | "
                     f"{fmt(r['server_p50_ms'], '.2f')} | {fmt(r['server_p99_ms'], '.2f')} | "
                     f"{fmt(r['mean_requests_per_batch'], '.2f')} | {fmt(r['server_cpu_ms_per_request'], '.2f')} |")
    machine = f"{platform.platform()}, {os.cpu_count()} CPUs, 1-min load average at the end {os.getloadavg()[0]:.1f}"
    lines += ["", f"Model {args.model} ({args.payload} payload), server max batch {args.max_batch_size}, max wait "
              f"{args.max_wait_ms} ms. Machine: {machine}."]
    text = "\n".join(lines)
    print(text)
    if args.markdown:
        args.markdown.write_text(text + "\n")
    if args.json:
        args.json.write_text(json.dumps({"model": str(args.model), "url": args.url, "payload": args.payload,
                                         "machine": machine, "levels": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
