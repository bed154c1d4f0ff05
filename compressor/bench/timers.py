"""The library timers the benchmarks use, chosen per device: nothing here times anything itself.

* CPU (and CUDA without Triton, or with ``flush_l2=False``): ``torch.utils.benchmark.Timer.blocked_autorange``
  (blocks of calls sized so each block takes long enough to time, for at least ``seconds``; it synchronises the
  accelerator and runs at the caller's thread count), on the wall clock or, for one thread on a shared machine, the
  process's CPU time (``time.process_time`` as the Timer's clock).
* CUDA: ``triton.testing.do_bench``, which brackets every call with CUDA events and evicts the L2 cache before each,
  so small shapes are read from HBM as in training.

Peak memory, which neither timer measures, is ``compressor.bench.memory``.
"""

from __future__ import annotations

import importlib.util
import statistics
import time
from collections.abc import Callable

import torch
from torch.utils import benchmark

CLOCKS = ("wall", "cpu")


def measure(fn: Callable[[], object], device: torch.device | str, *, seconds: float = 1.0, flush_l2: bool = True,
            clock: str = "wall") -> list[float]:
    """Seconds per call of ``fn()`` for about ``seconds``; the caller has already run it once (compilation).

    Args:
        fn: the call to time; its result is dropped.
        device: where ``fn`` runs (``cuda`` uses ``triton.testing.do_bench`` when Triton is installed).
        seconds: measuring time (the timers add their own warm-up and calibration).
        flush_l2: CUDA: evict the L2 cache before each call (``do_bench``); False times warm-cache calls.
        clock: ``"wall"``, or ``"cpu"`` (CPU device only): the process's CPU time, which on a shared machine leaves
            out the time the process waits for a core. With one thread it is the cost of the call; with more it adds
            up every thread's time, spinning included, so it is meant for one thread.

    Returns:
        The timer's samples: the mean call of each block (``Timer``) or each call (``do_bench``).
    """
    device = torch.device(device)
    if clock not in CLOCKS:
        raise ValueError(f"clock must be 'wall' or 'cpu', got {clock!r}")
    if clock == "cpu" and device.type != "cpu":
        raise ValueError("clock='cpu' measures CPU time: CPU device only")
    if device.type == "cuda" and flush_l2 and importlib.util.find_spec("triton") is not None:
        from triton.testing import do_bench

        with torch.cuda.device(device):
            ms = do_bench(fn, warmup=max(1, int(seconds * 250)), rep=max(1, int(seconds * 1000)), return_mode="all")
        return [t / 1e3 for t in ms]
    extra = {"timer": time.process_time} if clock == "cpu" else {}
    timer = benchmark.Timer(stmt="fn()", globals={"fn": fn}, num_threads=torch.get_num_threads(), **extra)
    return list(timer.blocked_autorange(min_run_time=seconds).times)


def copy_bandwidth(nbytes: int, device: torch.device | str, *, dtype: torch.dtype = torch.float32,
                   **measure_kwargs) -> float:
    """GB/s (1e9 bytes/s) of ``dst.copy_(src)`` for contiguous ``dtype`` buffers of ``nbytes`` each, timed by
    ``measure``: the copy reads and writes ``nbytes``, so ``GB/s = 2 * nbytes / median time``."""
    device = torch.device(device)
    numel = max(1, nbytes // dtype.itemsize)
    src = torch.empty(numel, dtype=dtype, device=device).fill_(1)
    dst = torch.empty_like(src)
    dst.copy_(src)
    samples = measure(lambda: dst.copy_(src), device, **measure_kwargs)
    return 2 * numel * src.element_size() / statistics.median(samples) / 1e9
