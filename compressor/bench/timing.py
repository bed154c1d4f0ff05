"""Timing and memory measurement shared by the benchmarks: PyTorch's and Triton's timers, plus what they lack.

* Time, CPU (and CUDA without Triton, or with ``flush_l2=False``): ``torch.utils.benchmark.Timer.blocked_autorange``
  (blocks of calls sized so each block takes long enough to time, for at least ``seconds``; it synchronises the
  accelerator and runs at the caller's thread count), on the wall clock or, for one thread on a shared machine,
  the process's CPU time. CUDA: ``triton.testing.do_bench``, which brackets every call
  with CUDA events and evicts the L2 cache before each, so small shapes are read from HBM as in training.
* Copy bandwidth: ``dst.copy_(src)`` of a contiguous buffer of a given byte count, timed the same way in the same
  process; it reads and writes that count, so its GB/s is ``2 * nbytes / time``.
* Peak extra memory of one call, on top of what was allocated before it (the returned tensors included), which
  neither timer measures. CUDA: ``torch.cuda.max_memory_allocated()`` after ``reset_peak_memory_stats()``, minus
  ``memory_allocated()`` before. CPU: the running sum of the allocation and free events that the autograd profiler
  (what ``torch.profiler`` wraps) records with ``profile_memory=True``: every tensor allocation through PyTorch's CPU
  allocator, including those of Inductor's generated code and of C++ extensions using ATen; memory that libraries
  allocate behind ATen's back (oneDNN scratch, OpenMP stacks) is not seen.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch.utils import benchmark


@dataclass
class Timing:
    """Seconds per call: the median, minimum and 20th / 80th percentiles of ``reps`` samples (a sample is one timed
    call on CUDA, the mean call of one block of calls on the CPU)."""

    median: float
    minimum: float
    p20: float
    p80: float
    reps: int

    @classmethod
    def from_samples(cls, samples: list[float]) -> Timing:
        ordered = sorted(samples)
        n = len(ordered)
        return cls(
            median=statistics.median(ordered),
            minimum=ordered[0],
            p20=ordered[min(n - 1, int(0.2 * n))],
            p80=ordered[min(n - 1, int(0.8 * n))],
            reps=n,
        )


def time_fn(fn: Callable[[], object], device: torch.device | str, *, seconds: float = 1.0,
            flush_l2: bool = True, clock: str = "wall") -> Timing:
    """Time ``fn()`` for about ``seconds`` (see the module notes); the caller has already run it once (compilation).

    Args:
        fn: the call to time; its result is dropped.
        device: where ``fn`` runs (``cuda`` uses ``triton.testing.do_bench`` when Triton is installed).
        seconds: measuring time (the timers add their own warm-up and calibration).
        flush_l2: CUDA: evict the L2 cache before each call (``do_bench``); False times warm-cache calls.
        clock: ``"wall"``, or ``"cpu"`` (CPU device only): the process's CPU time (``time.process_time``), which on
            a shared machine leaves out the time the process waits for a core. With one thread it is the cost of the
            call; with more it adds up every thread's time, spinning included, so it is meant for ``--threads 1``.
    """
    device = torch.device(device)
    if clock not in ("wall", "cpu"):
        raise ValueError(f"clock must be 'wall' or 'cpu', got {clock!r}")
    if clock == "cpu":
        if device.type != "cpu":
            raise ValueError("clock='cpu' measures CPU time: CPU device only")
        timer = benchmark.Timer(stmt="fn()", globals={"fn": fn}, num_threads=torch.get_num_threads(),
                                timer=time.process_time)
        return Timing.from_samples(list(timer.blocked_autorange(min_run_time=seconds).times))
    if device.type == "cuda" and flush_l2 and importlib.util.find_spec("triton") is not None:
        from triton.testing import do_bench

        with torch.cuda.device(device):
            ms = do_bench(fn, warmup=max(1, int(seconds * 250)), rep=max(1, int(seconds * 1000)), return_mode="all")
        return Timing.from_samples([t / 1e3 for t in ms])
    timer = benchmark.Timer(stmt="fn()", globals={"fn": fn}, num_threads=torch.get_num_threads())
    return Timing.from_samples(list(timer.blocked_autorange(min_run_time=seconds).times))


def copy_bandwidth(
    nbytes: int, device: torch.device | str, *, dtype: torch.dtype = torch.float32, **timing_kwargs
) -> tuple[float, Timing]:
    """GB/s (1e9 bytes/s) of ``dst.copy_(src)`` for contiguous ``dtype`` buffers of ``nbytes`` each.

    The copy reads ``nbytes`` and writes ``nbytes``: ``GB/s = 2 * nbytes / median time``.
    """
    device = torch.device(device)
    numel = max(1, nbytes // torch.empty((), dtype=dtype).element_size())
    src = torch.empty(numel, dtype=dtype, device=device).fill_(1)
    dst = torch.empty_like(src)
    dst.copy_(src)
    timing = time_fn(lambda: dst.copy_(src), device, **timing_kwargs)
    moved = 2 * numel * src.element_size()
    return moved / timing.median / 1e9, timing


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """Silence file descriptor 2 (Kineto prints start/stop lines and GPU probes from C++), restoring it after."""
    try:
        saved = os.dup(2)
    except OSError:
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def peak_extra_memory(fn: Callable[[], object], device: torch.device | str) -> int | None:
    """Peak bytes allocated during one call of ``fn`` beyond what was allocated before it (see the module notes).

    Returns None where no honest measurement exists (a device other than CPU or CUDA).
    """
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        out = fn()
        torch.cuda.synchronize(device)
        peak = torch.cuda.max_memory_allocated(device) - base
        del out
        return int(peak)
    if device.type == "cpu":
        return _cpu_peak_extra_memory(fn)
    return None


def _cpu_peak_extra_memory(fn: Callable[[], object]) -> int | None:
    # The autograd profiler (what torch.profiler wraps, without its heavy imports) with memory events on.
    with _quiet_stderr(), torch.autograd.profiler.profile(profile_memory=True, use_cpu=True) as prof:
        out = fn()
    del out
    try:
        events = [e for e in prof.kineto_results.events() if e.name() == "[memory]"]
    except AttributeError:  # profiler internals changed: say so ("—") rather than guess
        return None
    current = peak = 0
    for event in sorted(events, key=lambda e: e.start_ns()):
        if event.device_type() != torch.autograd.DeviceType.CPU:
            continue
        current += event.nbytes()
        peak = max(peak, current)
    return int(peak)
