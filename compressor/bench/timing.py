"""Timing, device-copy bandwidth and peak-memory measurement shared by the benchmarks.

* Time: median over repetitions after warm-up. On CUDA each repetition is bracketed by CUDA events (read after one
  ``synchronize`` at the end) and, by default, preceded by a write of a 256 MiB buffer that evicts the L2 cache, so
  small shapes are read from HBM as in training; on the CPU ``time.perf_counter`` around each call.
* Copy bandwidth: ``dst.copy_(src)`` of a contiguous buffer of a given byte count, timed the same way in the same
  process; it reads and writes that count, so its GB/s is ``2 * nbytes / time``.
* Peak extra memory of one call, on top of what was allocated before it (the returned tensors included):
  CUDA: ``torch.cuda.max_memory_allocated()`` after ``reset_peak_memory_stats()``, minus ``memory_allocated()``
  before. CPU: the running sum of the allocation and free events that the autograd profiler (what
  ``torch.profiler`` wraps) records with ``profile_memory=True``: every tensor allocation through PyTorch's CPU
  allocator, including those of Inductor's generated code and of C++ extensions using ATen; memory that libraries
  allocate behind ATen's back (oneDNN scratch, OpenMP stacks) is not seen.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch

L2_FLUSH_BYTES = 256 * 2**20


@dataclass
class Timing:
    """Seconds per call over ``reps`` timed repetitions."""

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


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_fn(
    fn: Callable[[], object],
    device: torch.device | str,
    *,
    warmup: int = 3,
    min_reps: int = 5,
    max_reps: int = 100,
    target_seconds: float = 1.0,
    flush_l2: bool = True,
) -> Timing:
    """Median time of ``fn()``: ``warmup`` untimed calls, then as many timed calls as fit in ``target_seconds``.

    The repetition count is ``clamp(target_seconds / estimate, min_reps, max_reps)``, the estimate being the last
    warm-up call. Results of ``fn`` are dropped before the next call, so one call's memory is live at a time.
    """
    device = torch.device(device)
    estimate = None
    for _ in range(max(1, warmup)):
        synchronize(device)
        start = time.perf_counter()
        out = fn()
        synchronize(device)
        estimate = time.perf_counter() - start
        del out
    reps = int(min(max_reps, max(min_reps, target_seconds / max(estimate, 1e-9))))
    if device.type == "cuda":
        return Timing.from_samples(_time_cuda(fn, device, reps, flush_l2))
    samples = []
    for _ in range(reps):
        start = time.perf_counter()
        out = fn()
        samples.append(time.perf_counter() - start)
        del out
    return Timing.from_samples(samples)


def _time_cuda(fn: Callable[[], object], device: torch.device, reps: int, flush_l2: bool) -> list[float]:
    flush = torch.empty(L2_FLUSH_BYTES, dtype=torch.uint8, device=device) if flush_l2 else None
    events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(reps)]
    synchronize(device)
    for start, end in events:
        if flush is not None:
            flush.zero_()
        start.record()
        out = fn()
        end.record()
        del out
    synchronize(device)
    return [start.elapsed_time(end) / 1e3 for start, end in events]


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
        synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        out = fn()
        synchronize(device)
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
