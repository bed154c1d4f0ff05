"""pytest-benchmark set-up for the fused-op micro-benchmarks (``pytest benchmarks --benchmark-only``).

This folder is a benchmark suite, not the test suite: ``pytest tests`` never collects it. Providers that do not
exist on this machine (CUDA/Triton without a GPU, the C++ op before it is built) are skipped. Triton on the CPU
would only run through its interpreter, so it is never benchmarked there.

Each round is timed by pytest-benchmark with ``time.perf_counter``; on CUDA the timed function ends with
``torch.cuda.synchronize()`` and the untimed set-up evicts the L2 cache and synchronises first, so a round is one
complete forward+backward (or averaging step) as training sees it, launch overhead included. Bandwidth (GB/s,
only the bytes that must move) and the same-run copy bandwidth go to each benchmark's ``extra_info``
(``--benchmark-json`` keeps them).
"""

from __future__ import annotations

import pytest
import torch

from compressor.bench.timing import L2_FLUSH_BYTES, copy_bandwidth, time_fn


class Runner:
    """Runs ``step`` under pytest-benchmark with a round count fitted to its duration, then records bandwidth."""

    def __init__(self, benchmark, device: str):
        self.benchmark = benchmark
        self.device = torch.device(device)
        self._flush = None
        if self.device.type == "cuda":
            self._flush = torch.empty(L2_FLUSH_BYTES, dtype=torch.uint8, device=self.device)

    def _setup(self):
        if self._flush is not None:
            self._flush.zero_()
            torch.cuda.synchronize(self.device)

    def __call__(self, step, *, moved_bytes: int, copy_gbps: float | None = None, seconds: float = 1.0):
        sync = self.device.type == "cuda"

        def target():
            out = step()
            if sync:
                torch.cuda.synchronize()
            return out

        estimate = time_fn(step, self.device, warmup=2, min_reps=1, max_reps=1, target_seconds=0.0, flush_l2=False)
        rounds = int(min(100, max(5, seconds / max(estimate.median, 1e-9))))
        self.benchmark.pedantic(target, setup=self._setup, rounds=rounds, warmup_rounds=1)
        self.benchmark.extra_info["bytes"] = moved_bytes
        stats = getattr(getattr(self.benchmark, "stats", None), "stats", None)
        if stats is not None:
            gbps = moved_bytes / stats.median / 1e9
            self.benchmark.extra_info["gbps"] = round(gbps, 2)
            if copy_gbps:
                self.benchmark.extra_info["copy_gbps"] = round(copy_gbps, 2)
                self.benchmark.extra_info["copy_ratio"] = round(gbps / copy_gbps, 3)


@pytest.fixture
def run_bench(benchmark):
    """``run_bench(device)(step, moved_bytes=..., copy_gbps=...)``."""
    return lambda device: Runner(benchmark, device)


_COPY_CACHE: dict[tuple, float] = {}


@pytest.fixture(scope="session")
def copy_gbps():
    """``copy_gbps(nbytes, device, dtype)``: same-run device-copy bandwidth, measured once per size."""

    def measure(nbytes: int, device: str, dtype: torch.dtype = torch.float32) -> float:
        key = (nbytes, device, dtype)
        if key not in _COPY_CACHE:
            _COPY_CACHE[key] = copy_bandwidth(nbytes, device, dtype=dtype, target_seconds=0.5)[0]
        return _COPY_CACHE[key]

    return measure
