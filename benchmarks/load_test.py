"""Bounded load test of ``compressor serve`` on loopback: requests/s, p50/p99 latency and errors per concurrency.

Usage::

    python benchmarks/load_test.py MODEL.onnx [--concurrency 1,8,32] [--requests 300] [--max-seconds 30]
        [--payload png|raw|json] [--max-batch-size 32] [--max-wait-ms 5] [--url URL] [--markdown FILE] [--json FILE]
        [--bad-inputs FRACTION] [--large-every N] [--max-concurrent-decodes 4] [--max-image-mb 128]
        [--max-body-mb 8]

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

``--bad-inputs F`` makes a fraction F of the requests hostile (``load_bad_mix.py``: every case of
``tests/bad_requests.py`` in turn, the real 485 KB 7900 x 7900 16-bit RGBA PNG among them, and clients leaving
half-way through their body), each on a connection of its own, and every ``--large-every``-th valid request the
largest image the server accepts. Reported per level: responses 5xx (any request), bad requests answered with
their own 4xx, disconnects sent and counted by the server, and the server's resident memory (sampled every 5 ms
from ``/proc/<pid>/status``, and the kernel's peak VmHWM after a reset) against the bound: resident memory before
the level + ``--max-concurrent-decodes`` x ``--max-image-mb`` + 2 x the largest body per connection (a body and
its copy). Latency and requests/s count the small valid requests only.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import math
import os
import platform
import socket
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
from load_bad_mix import DISCONNECT, MemorySampler, WireCase, bad_cases, largest_accepted_png, send_bad, wire_bytes
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


def start_server(model: Path, port: int, options: list[str]) -> subprocess.Popen:
    """``compressor serve`` in a subprocess with these options; returns once ``/health`` answers."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "compressor", "serve", str(model), "--port", str(port), "--log-level", "warning",
         *options],
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


async def exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, data: bytes) -> int:
    """Send one request on an open connection and read the whole response; returns the status code."""
    writer.write(data)
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    length = next(int(v) for k, _, v in (line.partition(":") for line in lines[1:]) if k.lower() == "content-length")
    await reader.readexactly(length)
    return int(lines[0].split(" ", 2)[1])


@dataclass
class Mix:
    """Bad requests sent alongside the valid ones (``--bad-inputs``) and the largest accepted image."""

    fraction: float
    cases: list[WireCase]
    large: bytes | None
    large_every: int
    sent: Counter = field(default_factory=Counter)
    statuses: dict[str, Counter] = field(default_factory=dict)
    large_statuses: Counter = field(default_factory=Counter)

    def is_bad(self, i: int) -> bool:
        """Whether request ``i`` is a bad one: spread evenly, ``fraction`` of them."""
        return math.floor((i + 1) * self.fraction) > math.floor(i * self.fraction)

    def summary(self) -> dict:
        """Counts per case: sent, answered with the expected status, 5xx, and every case that got another one."""
        expected = {case.name: case.status for case in self.cases}
        bad = [(name, status, n) for name, counter in self.statuses.items() for status, n in counter.items()]
        answered = [(name, status, n) for name, status, n in bad if expected[name] is not None]
        return {
            "bad_sent": sum(n for name, _, n in answered), "disconnects_sent": self.sent[DISCONNECT],
            "bad_as_expected": sum(n for name, status, n in answered if status == expected[name]),
            "bad_4xx": sum(n for _, status, n in answered if 400 <= status < 500),
            "bad_5xx": sum(n for _, status, n in answered if status >= 500),
            "bad_cases_sent": len({name for name, _, _ in answered}),
            "bad_cases": len([case for case in self.cases if case.status is not None]),
            "unexpected": sorted({f"{name}: {status} (expected {expected[name]})" for name, status, _ in answered
                                  if status != expected[name]}),
            "large_sent": sum(self.large_statuses.values()), "large_ok": self.large_statuses[200],
            "large_5xx": sum(n for status, n in self.large_statuses.items() if status >= 500),
        }


async def level(url: str, wire: list[bytes], concurrency: int, requests: int, max_seconds: float,
                mix: Mix | None = None) -> dict:
    """Run one concurrency level: ``concurrency`` keep-alive connections, each sending requests back to back.

    A minimal asyncio HTTP/1.1 client (pre-encoded requests, Content-Length responses) keeps the client's own CPU
    cost per request small, since it shares the cores with the server. With a ``mix``, some requests are bad ones
    (each on a fresh connection) and some valid ones the largest accepted image.
    """
    host, port = url.removeprefix("http://").rstrip("/").split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    for i in range(WARMUP):
        await exchange(reader, writer, wire[i % len(wire)])
    writer.close()
    before = httpx.get(f"{url}/metrics", timeout=30).json()["batching"]
    latencies: list[float] = []
    errors = 0
    sent = bad = valid = large_sent = 0
    stop = time.perf_counter() + max_seconds

    async def worker() -> None:
        nonlocal sent, errors, bad, valid, large_sent
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            while sent < requests and time.perf_counter() < stop:
                if mix is not None and mix.is_bad(sent):
                    sent += 1
                    case = mix.cases[bad % len(mix.cases)]
                    bad += 1
                    mix.sent[case.name] += 1
                    status = await send_bad(host, int(port), case)
                    if status is not None:
                        mix.statuses.setdefault(case.name, Counter())[status] += 1
                    continue
                large = mix is not None and mix.large is not None and valid % mix.large_every == mix.large_every - 1
                data = mix.large if large else wire[valid % len(wire)]
                sent += 1
                valid += 1
                large_sent += large
                start = time.perf_counter()
                try:
                    status = await exchange(reader, writer, data)
                except (OSError, asyncio.IncompleteReadError, ValueError, StopIteration):
                    status = 0  # no answer
                    writer.close()
                    reader, writer = await asyncio.open_connection(host, int(port))
                if large:
                    mix.large_statuses[status] += 1
                elif status == 200:
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
        "concurrency": concurrency, "requests": valid - large_sent, "completed": len(latencies), "errors": errors,
        "seconds": wall, "requests_per_s": len(latencies) / wall if wall else 0.0,
        "p50_ms": float(np.percentile(ms, 50)) if len(ms) else None,
        "p99_ms": float(np.percentile(ms, 99)) if len(ms) else None,
        "mean_requests_per_batch": (after["requests"] - before["requests"]) / batches if batches else None,
        "server_p50_ms": server["p50"], "server_p99_ms": server["p99"], "server_window": server["window"],
        "responses_5xx": metrics["errors_5xx"], "client_disconnects": metrics["client_disconnects"],
        **(mix.summary() if mix is not None else {}),
    }


def memory_row(result: dict, sampler: MemorySampler, baseline: int, bound: int, after: int | None) -> None:
    """Put the server's memory over the level into ``result`` (MiB)."""
    mib = lambda v: None if v is None else v / 2**20  # noqa: E731
    hwm = sampler.status("VmHWM") if sampler.hwm_reset else None
    peak = max(v for v in (sampler.peak, hwm) if v is not None)
    result.update({"rss_before_mb": mib(baseline), "rss_peak_sampled_mb": mib(sampler.peak),
                   "rss_peak_kernel_mb": mib(hwm), "rss_after_mb": mib(after), "memory_bound_mb": mib(bound),
                   "within_bound": peak <= bound, "rss_samples": len(sampler.samples)})


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
    parser.add_argument("--bad-inputs", type=float, default=0.0, metavar="FRACTION",
                        help="fraction of requests taken from the bad-input catalogue (0: none)")
    parser.add_argument("--large-every", type=int, default=20,
                        help="with --bad-inputs: every N-th valid request is the largest accepted image")
    parser.add_argument("--max-concurrent-decodes", type=int, default=4)
    parser.add_argument("--max-image-mb", type=float, default=128.0)
    parser.add_argument("--max-body-mb", type=float, default=8.0)
    parser.add_argument("--markdown", type=Path)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    levels = [int(c) for c in args.concurrency.split(",")]
    options = ["--max-batch-size", str(args.max_batch_size), "--max-wait-ms", str(args.max_wait_ms),
               "--max-concurrent-decodes", str(args.max_concurrent_decodes), "--max-image-mb", str(args.max_image_mb),
               "--max-body-mb", str(args.max_body_mb)]
    image_bytes = int(args.max_image_mb * 2**20)
    large = largest_accepted_png(image_bytes) if args.bad_inputs else None

    results = []
    for concurrency in levels:
        proc, url = None, args.url
        if url is None:  # a fresh server per level, so its /metrics describe this level only
            port = free_port()
            proc = start_server(args.model, port, options)
            url = f"http://127.0.0.1:{port}"
        try:
            meta = httpx.get(f"{url}/metadata", timeout=10).json()
            wire = [wire_bytes(url, "POST", "/predict", body) for body in payloads(meta, args.payload)]
            mix = None
            if args.bad_inputs:
                large_wire = wire_bytes(url, "POST", "/predict", {"content": large,
                                                                   "headers": {"content-type": "image/png"}})
                limits = httpx.get(f"{url}/metrics", timeout=10).json()["limits"]  # the server's own, with --url too
                mix = Mix(args.bad_inputs, bad_cases(url, meta, limits["max_body_bytes"], limits["max_images"]),
                          large_wire, args.large_every)
            before = cpu_seconds(proc.pid) if proc else None
            sampler = MemorySampler(proc.pid) if proc else None
            baseline = sampler.status("VmRSS") if sampler else None
            with sampler or contextlib.nullcontext():
                result = asyncio.run(level(url, wire, concurrency, args.requests, args.max_seconds, mix))
            after = cpu_seconds(proc.pid) if proc else None
            # Server CPU per answered request over the level (warm-up and /metrics calls included, ~12 requests).
            result["server_cpu_ms_per_request"] = (
                1e3 * (after - before) / (result["completed"] + WARMUP) if before is not None and after is not None
                and result["completed"] else None)
            if sampler is not None and mix is not None:
                largest = max([len(case.data) for case in mix.cases] + [len(mix.large), *map(len, wire)])
                bound = baseline + args.max_concurrent_decodes * image_bytes + concurrency * 2 * largest
                time.sleep(2.0)  # idle: what the server keeps after the level
                memory_row(result, sampler, baseline, bound, sampler.status("VmRSS"))
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
    if args.bad_inputs:
        lines += ["", "| concurrency | responses 5xx | bad requests (cases) | answered their 4xx | disconnects sent / "
                  "counted | largest accepted image: sent / 200 | RSS before (MiB) | peak sampled / kernel (MiB) | "
                  "bound (MiB) | within | RSS 2 s after (MiB) |",
                  "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|"]
        for r in results:
            lines.append(
                f"| {r['concurrency']} | {r['responses_5xx']} | {r['bad_sent']} ({r['bad_cases_sent']} of "
                f"{r['bad_cases']}) | {r['bad_as_expected']} | {r['disconnects_sent']} / {r['client_disconnects']} | "
                f"{r['large_sent']} / {r['large_ok']} | {fmt(r.get('rss_before_mb'), '.0f')} | "
                f"{fmt(r.get('rss_peak_sampled_mb'), '.0f')} / {fmt(r.get('rss_peak_kernel_mb'), '.0f')} | "
                f"{fmt(r.get('memory_bound_mb'), '.0f')} | {r.get('within_bound', '-')} | "
                f"{fmt(r.get('rss_after_mb'), '.0f')} |")
            lines += [f"  - unexpected at {r['concurrency']}: {item}" for item in r["unexpected"]]
    from compressor.bench.report import cpu_model

    machine = (f"{platform.platform()}, {cpu_model()}, {os.cpu_count()} CPUs, 1-min load average at the end "
               f"{os.getloadavg()[0]:.1f}")
    mix_text = (f" Bad inputs: {args.bad_inputs:.0%} of requests; every {args.large_every}th valid request the "
                f"largest accepted image ({len(large):,} bytes); max {args.max_concurrent_decodes} decodes of at most "
                f"{args.max_image_mb:g} MiB." if args.bad_inputs else "")
    lines += ["", f"Model {args.model} ({args.payload} payload), server max batch {args.max_batch_size}, max wait "
              f"{args.max_wait_ms} ms.{mix_text} Machine: {machine}."]
    text = "\n".join(lines)
    print(text)
    if args.markdown:
        args.markdown.write_text(text + "\n")
    if args.json:
        args.json.write_text(json.dumps({"model": str(args.model), "url": args.url, "payload": args.payload,
                                         "machine": machine, "levels": results}, indent=2) + "\n")
    bad = [r for r in results if r.get("responses_5xx") or r.get("unexpected") or r.get("within_bound") is False]
    sys.exit(1 if args.bad_inputs and bad else 0)


if __name__ == "__main__":
    main()
