"""Peak memory of one benchmark step, the one measurement that the library timers (``compressor.bench.timers``) lack.

Peak extra memory of one call, on top of what was allocated before it (the returned tensors included). CUDA:
``torch.cuda.max_memory_allocated()`` after ``reset_peak_memory_stats()``, minus ``memory_allocated()`` before. CPU:
the running sum of the allocation and free events that the autograd profiler (what ``torch.profiler`` wraps) records
with ``profile_memory=True``: every tensor allocation through PyTorch's CPU allocator, including those of Inductor's
generated code and of C++ extensions using ATen; memory that libraries allocate behind ATen's back (oneDNN scratch,
OpenMP stacks) is not seen. ``release`` frees memory between measurements.
"""

from __future__ import annotations

import contextlib
import gc
import os
from collections.abc import Callable, Iterator

import torch


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


def release(device: torch.device) -> None:
    """Free what the last measurement left: Python's garbage and, on CUDA, the caching allocator's unused blocks."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
