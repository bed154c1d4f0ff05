"""pytest-benchmark set-up for the fused-op micro-benchmarks (``pytest benchmarks --benchmark-only``).

This folder is a benchmark suite, not the test suite: ``pytest tests`` never collects it. Providers that do not
exist on this machine (CUDA/Triton without a GPU, the C++ op before it is built) are skipped. Triton on the CPU
would only run through its interpreter, so it is never benchmarked there.

Each round is timed by pytest-benchmark with ``time.perf_counter``; on CUDA the timed function ends with
``torch.cuda.synchronize()`` and the untimed set-up evicts the L2 cache (Triton's ``clear_cache``, what
``triton.testing.do_bench`` does) and synchronises first, so a round is one complete forward+backward (or averaging
step) as training sees it, launch overhead included. Bandwidth (GB/s, only the bytes that must move) and the
same-run copy bandwidth go to each benchmark's ``extra_info`` (``--benchmark-json`` keeps them).
"""

from __future__ import annotations

import statistics

import pytest
import torch

from compressor.bench.timers import copy_bandwidth, measure


class Runner:
    """Runs ``step`` under pytest-benchmark with a round count fitted to its duration, then records bandwidth."""

    def __init__(self, benchmark, device: str):
        self.benchmark = benchmark
        self.device = torch.device(device)
        self._cache = self._driver = None
        if self.device.type == "cuda":
            from triton.runtime import driver

            self._driver = driver.active
            self._cache = self._driver.get_empty_cache_for_benchmark()

    def _setup(self):
        if self._cache is not None:
            self._driver.clear_cache(self._cache)
            torch.cuda.synchronize(self.device)

    def __call__(self, step, *, moved_bytes: int, copy_gbps: float | None = None, seconds: float = 1.0):
        sync = self.device.type == "cuda"

        def target():
            out = step()
            if sync:
                torch.cuda.synchronize()
            return out

        estimate = statistics.median(measure(step, self.device, seconds=0.05, flush_l2=False))
        rounds = int(min(100, max(5, seconds / max(estimate, 1e-9))))
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
            _COPY_CACHE[key] = copy_bandwidth(nbytes, device, dtype=dtype, seconds=0.5)
        return _COPY_CACHE[key]

    return measure
