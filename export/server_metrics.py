"""The server's counters and their two renderings: JSON and the Prometheus text exposition format (version 0.0.4).

Responses are counted per route of the application (``/predict``, ``/health``, ...) and status code; any other path
counts as route ``other``, so the counters stay the same size whatever paths clients try. A client that goes away
before its answer is counted as a disconnect, not as a response.
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections import Counter, deque
from pathlib import Path

import numpy as np

LATENCY_WINDOW = 2048  # latency percentiles cover this many latest answered predictions
OTHER_ROUTE = "other"
PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class Counters:
    """HTTP-level counters (thread-safe): responses by route and status, disconnects, ``/predict`` in flight and
    its server-side latency."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.routes: set[str] = set()  # the application's paths, set by create_app; any other path counts as other
        self.responses: Counter[tuple[str, int]] = Counter()
        self.disconnects = 0
        self.started = time.time()
        self.in_flight = 0
        self.latencies: deque[float] = deque(maxlen=LATENCY_WINDOW)  # seconds of the latest answered predictions
        self.latency_count = 0
        self.latency_sum = 0.0

    def admit(self, delta: int) -> None:
        """One more (+1) or one fewer (-1) ``/predict`` request in flight."""
        with self._lock:
            self.in_flight += delta

    def answered(self, seconds: float) -> None:
        """A ``/predict`` request answered after ``seconds``."""
        with self._lock:
            self.latencies.append(seconds)
            self.latency_count += 1
            self.latency_sum += seconds

    def record(self, path: str, status: int) -> None:
        """A response with ``status`` to a request for ``path``."""
        with self._lock:
            self.responses[(path if path in self.routes else OTHER_ROUTE, status)] += 1

    def disconnected(self) -> None:
        """A client that closed its connection before the answer."""
        with self._lock:
            self.disconnects += 1

    def snapshot(self) -> dict[str, object]:
        """JSON-ready copy of the counters."""
        with self._lock:
            status: Counter[int] = Counter()
            by_route: Counter[str] = Counter()
            for (route, code), n in self.responses.items():
                status[code] += n
                by_route[route] += n
            return {
                "uptime_seconds": time.time() - self.started,
                "in_flight": self.in_flight,
                "responses": {str(k): v for k, v in sorted(status.items())},
                "requests_by_route": dict(sorted(by_route.items())),
                "responses_by_route": {route: {str(code): n for (r, code), n in sorted(self.responses.items())
                                               if r == route} for route in sorted(by_route)},
                "errors_4xx": sum(v for k, v in status.items() if 400 <= k < 500),
                "errors_5xx": sum(v for k, v in status.items() if k >= 500),
                "client_disconnects": self.disconnects,
                "predict_latency_ms": {**percentiles(list(self.latencies)), "count": self.latency_count,
                                       "sum_seconds": self.latency_sum},
            }


def percentiles(seconds: list[float]) -> dict[str, float | int | None]:
    """p50 / p90 / p99 in milliseconds of server-side ``/predict`` handling times (read, decode, batch, answer)."""
    if not seconds:
        return {"window": 0, "p50": None, "p90": None, "p99": None}
    ms = np.asarray(seconds) * 1e3
    return {"window": len(ms), **{f"p{q}": float(np.percentile(ms, q)) for q in (50, 90, 99)}}


def resident_bytes() -> int | None:
    """Resident memory of this process (Linux ``/proc/self/statm``; None elsewhere)."""
    try:
        return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def _number(value: float | int | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "NaN"
    return repr(float(value)) if isinstance(value, float) else str(value)


def _label(value: object) -> str:
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def prometheus_text(metrics: dict) -> str:
    """The ``/metrics`` JSON (``Counters.snapshot`` plus ``batching``, ``decodes``, ``limits`` and
    ``resident_memory_bytes``) in the Prometheus text format: one ``compressor_*`` family per quantity."""
    lines: list[str] = []

    def family(name: str, kind: str, help_text: str, *samples: tuple[str, dict, object]) -> None:
        """``# HELP`` and ``# TYPE`` lines, then one line per ``(name suffix, labels, value)``."""
        lines.extend([f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"])
        for suffix, labels, value in samples:
            text = ",".join(f'{k}="{_label(v)}"' for k, v in labels.items())
            lines.append(f"{name}{suffix}{'{' + text + '}' if text else ''} {_number(value)}")

    def single(name: str, kind: str, help_text: str, value: object) -> None:
        family(name, kind, help_text, ("", {}, value))

    family("compressor_http_responses_total", "counter", "HTTP responses by route and status code.",
           *[("", {"route": route, "status": code}, n) for route, codes in metrics["responses_by_route"].items()
             for code, n in codes.items()])
    single("compressor_client_disconnects_total", "counter",
           "Requests whose client closed the connection before the answer (not counted as responses).",
           metrics["client_disconnects"])
    single("compressor_predict_in_flight", "gauge", "POST /predict requests being handled.", metrics["in_flight"])
    latency = metrics["predict_latency_ms"]
    family("compressor_predict_latency_seconds", "summary",
           f"Server-side POST /predict handling time; quantiles over the latest {LATENCY_WINDOW} answers.",
           *[("", {"quantile": q}, None if latency[f"p{p}"] is None else latency[f"p{p}"] / 1e3)
             for q, p in (("0.5", 50), ("0.9", 90), ("0.99", 99))],
           ("_sum", {}, latency["sum_seconds"]), ("_count", {}, latency["count"]))
    batching = metrics["batching"]
    for key, name, help_text in (("batches", "batches", "onnxruntime calls of the micro-batcher."),
                                 ("requests", "batched_requests", "Requests answered through the batcher."),
                                 ("images", "batched_images", "Images run through the batcher."),
                                 ("failed_batches", "failed_batches", "onnxruntime calls that raised.")):
        single(f"compressor_{name}_total", "counter", help_text, batching.get(key, 0))
    single("compressor_inference_seconds_total", "counter", "Time spent in onnxruntime calls.",
           batching.get("inference_seconds", 0.0))
    decodes, limits = metrics["decodes"], metrics["limits"]
    single("compressor_decodes_total", "counter", "Image decodes and JSON parses run.", decodes["total"])
    single("compressor_decodes_running", "gauge", "Decodes running now.", decodes["running"])
    single("compressor_decodes_waiting", "gauge", "Decodes waiting for a slot.", decodes["waiting"])
    single("compressor_decode_slots", "gauge", "Most decodes at once (--max-concurrent-decodes).",
           limits["max_concurrent_decodes"])
    single("compressor_max_image_bytes", "gauge", "Most memory one decode may take (--max-image-mb).",
           limits["max_image_bytes"])
    single("compressor_uptime_seconds", "gauge", "Seconds since the server started.", metrics["uptime_seconds"])
    if metrics.get("resident_memory_bytes") is not None:
        single("process_resident_memory_bytes", "gauge", "Resident memory size in bytes.",
               metrics["resident_memory_bytes"])
    return "\n".join(lines) + "\n"
