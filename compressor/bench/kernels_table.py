"""The ``multi_teacher_kd`` benchmark grid: providers x shapes, one row each, with the columns of RESULTS.md.

Per shape ``(K, B, C, dtype)``:

* ``median_ms``: median time of one forward+backward (``loss.mean()`` then ``autograd.grad`` w.r.t. ``S``).
* ``gbps``: only the bytes that must move, ``(K + 1) * B * C`` input elements read (teachers and student) plus
  ``B * C`` gradient elements written, times the element size, over the median time. Intermediates, re-reads
  and the backward's extra pass are not counted: a fused kernel that reads each input once approaches ``copy_gbps``.
* ``copy_gbps``: ``dst.copy_(src)`` of a buffer of the inputs' byte count on the same device in the same run
  (``2 * nbytes / time``); ``copy_ratio = gbps / copy_gbps``.
* ``speedup_vs_eager`` / ``speedup_vs_compile``: the eager composite's (torch.compile's) median over this row's.
* ``peak_extra_bytes``: peak memory allocated during one forward+backward beyond the inputs, the returned
  gradient included (see ``compressor.bench.memory``); ``peak_extra_x_grad`` divides it by one ``B x C``
  gradient in the student's dtype, so 1.0 means "nothing but the gradient". ``None`` (shown "—") when not measured.
* ``max_rel_err``: ``max |grad - grad_eager| / max |grad_eager|``, a guard against timing a wrong kernel;
  ``check`` is "ok" below 1e-3 (float32/64) or 5e-2 (bf16/fp16, where the eager composite divides by tau in the
  low precision), else "MISMATCH".
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from compressor.bench import kd_providers, report
from compressor.bench.memory import peak_extra_memory, release
from compressor.bench.report import Column, fixed, times
from compressor.bench.timers import copy_bandwidth, measure

TOLERANCE = {torch.float64: 1e-3, torch.float32: 1e-3, torch.bfloat16: 5e-2, torch.float16: 5e-2}
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16, "float64": torch.float64}


@dataclass(frozen=True)
class Shape:
    """One grid point."""

    grid: str
    k: int
    b: int
    c: int
    dtype: torch.dtype

    @property
    def input_bytes(self) -> int:
        """Teachers and student: ``(K + 1) * B * C`` elements."""
        return (self.k + 1) * self.b * self.c * self.dtype.itemsize

    @property
    def grad_bytes(self) -> int:
        """One ``B x C`` gradient in the student's dtype."""
        return self.b * self.c * self.dtype.itemsize

    @property
    def moved_bytes(self) -> int:
        """The bytes that must move: inputs read once, gradient written once."""
        return self.input_bytes + self.grad_bytes


def small_grid(dtype: torch.dtype = torch.float32, *, quick: bool = False) -> list[Shape]:
    """Medical-task sizes: K in {1, 3, 5}, C in {2, 8, 32, 100}, B in {64, 256} (quick: K in {1, 5}, C in {2, 100})."""
    ks, cs = ((1, 5), (2, 100)) if quick else ((1, 3, 5), (2, 8, 32, 100))
    return [Shape("small", k, b, c, dtype) for b in (64, 256) for c in cs for k in ks]


def classification_grid(dtype: torch.dtype = torch.float32, *, quick: bool = False) -> list[Shape]:
    """B=256, C in {8, 100, 1000}, K in {1, 3, 5, 8} (quick: C in {100, 1000}, K in {1, 5})."""
    cs, ks = ((100, 1000), (1, 5)) if quick else ((8, 100, 1000), (1, 3, 5, 8))
    return [Shape("classification", k, 256, c, dtype) for c in cs for k in ks]


def large_vocab_grid(dtype: torch.dtype = torch.bfloat16, *, quick: bool = False, batch: int = 8192) -> list[Shape]:
    """B=8192, C in {32768, 131072}, K in {1, 2, 4} (quick: K=4 only), K=4 first: it carries the targets."""
    ks = (4,) if quick else (4, 2, 1)
    return [Shape("large-vocab", k, batch, c, dtype) for k in ks for c in (32768, 131072)]


def _max_rel_err(grad: torch.Tensor, expected: torch.Tensor, rows: int = 1024) -> float:
    """``max |grad - expected| / max |expected|`` in float32, over row chunks (no full-size float32 temporaries)."""
    err = scale = 0.0
    for start in range(0, expected.shape[0], rows):
        g = grad[start : start + rows].float()
        e = expected[start : start + rows].float()
        err = max(err, float((g - e).abs().max()))
        scale = max(scale, float(e.abs().max()))
    return err / scale if scale > 0 else err


# a row's measured figures, in the JSON's column order: None until measured (and where not measured)
MEASURED = ("median_ms", "gbps", "copy_gbps", "copy_ratio", "speedup_vs_eager", "speedup_vs_compile",
            "peak_extra_bytes", "peak_extra_mib", "peak_extra_x_grad", "max_rel_err", "check", "error")


def _base_row(shape: Shape, provider: str) -> dict:
    return {"grid": shape.grid, "K": shape.k, "B": shape.b, "C": shape.c,
            "dtype": str(shape.dtype).removeprefix("torch."), "provider": provider, "bytes": shape.moved_bytes,
            **dict.fromkeys(MEASURED)}


def _error_text(exc: BaseException) -> str:
    return "out of memory" if isinstance(exc, torch.OutOfMemoryError) else report.error_text(exc)


def bench_shape(
    shape: Shape,
    providers: Sequence[str],
    device: torch.device,
    *,
    available: Sequence[str],
    check: bool = True,
    measure_memory: bool = True,
    timing: dict | None = None,
) -> list[dict]:
    """Rows for one shape: copy bandwidth, then each provider's time, bandwidth, memory and check."""
    timing = dict(timing or {})
    rows = []
    copy_gbps = copy_bandwidth(shape.input_bytes, device, dtype=shape.dtype, **timing)
    release(device)
    case = kd_providers.make_case(shape.k, shape.b, shape.c, dtype=shape.dtype, device=device)
    expected = None
    if check:
        try:
            expected = kd_providers.make_step("eager", case)()
        except Exception as exc:  # e.g. out of memory: the check is skipped, the timings still run
            print(f"  note: eager reference gradient unavailable ({_error_text(exc)}); no correctness check")
        release(device)
    for provider in providers:
        row = _base_row(shape, provider)
        row["copy_gbps"] = copy_gbps
        rows.append(row)
        if provider not in available:
            row["error"] = f"not available here (available: {', '.join(available)})"
            continue
        try:
            step = kd_providers.make_step(provider, case)
            grad = step()  # first call: compiles where there is something to compile
            if expected is not None:
                row["max_rel_err"] = _max_rel_err(grad, expected)
                row["check"] = "ok" if row["max_rel_err"] <= TOLERANCE[shape.dtype] else "MISMATCH"
            del grad
            report.add_timing(row, measure(step, device, **timing), shape.moved_bytes)
            if measure_memory:
                peak = peak_extra_memory(step, device)
                if peak is not None:
                    row.update(
                        peak_extra_bytes=peak, peak_extra_mib=peak / 2**20, peak_extra_x_grad=peak / shape.grad_bytes
                    )
        except Exception as exc:  # one failing provider must not stop the grid
            row["error"] = _error_text(exc)
        finally:
            step = None
            release(device)
    report.add_speedups(rows, {"eager": "speedup_vs_eager", "compile": "speedup_vs_compile"})
    del case, expected
    release(device)
    return rows


def run_grid(
    shapes: Sequence[Shape],
    device: torch.device | str,
    *,
    providers: Sequence[str] | None = None,
    check: bool = True,
    measure_memory: bool = True,
    timing: dict | None = None,
    max_seconds: float | None = None,
    on_shape: Callable[[Shape, list[dict]], None] | None = None,
) -> list[dict]:
    """Benchmark every shape; ``on_shape(shape, rows_so_far)`` after each (progress, incremental output).

    Providers default to all that are available on ``device``; requested but unavailable ones get a row that says
    so. With ``max_seconds``, shapes not started within that budget are left out (the first always runs).
    """
    device = torch.device(device)
    available = kd_providers.available_providers(device)
    providers = report.select_providers(providers, available, kd_providers.PROVIDERS)
    rows: list[dict] = []
    start = time.perf_counter()
    for i, shape in enumerate(shapes):
        if max_seconds is not None and i > 0 and time.perf_counter() - start > max_seconds:
            skipped = ", ".join(f"K={s.k} C={s.c}" for s in shapes[i:])
            print(f"  time budget of {max_seconds:.0f} s spent: left out {skipped}")
            break
        rows += bench_shape(
            shape,
            providers,
            device,
            available=available,
            check=check,
            measure_memory=measure_memory,
            timing=timing,
        )
        if on_shape is not None:
            on_shape(shape, rows)
    return rows


def sort_rows(rows: Sequence[dict]) -> list[dict]:
    """Grid, then K, C, B, then provider order (eager, compile, reference, cpp, cuda, triton)."""
    grids = {"small": 0, "classification": 1, "large-vocab": 2}
    order = {p: i for i, p in enumerate(kd_providers.PROVIDERS)}
    return sorted(
        rows, key=lambda r: (grids.get(r["grid"], 9), r["K"], r["C"], r["B"], r["dtype"], order.get(r["provider"], 99))
    )


COLUMNS = [
    Column("K", "K"),
    Column("B", "B"),
    Column("C", "C"),
    Column("dtype", "dtype"),
    Column("provider", "provider"),
    Column("fwd+bwd ms", "median_ms", fixed(3)),
    *report.BANDWIDTH_COLUMNS,
    Column("vs eager", "speedup_vs_eager", times),
    Column("vs compile", "speedup_vs_compile", times),
    Column("peak extra MiB", "peak_extra_mib", fixed(1)),
    Column("x BxC grad", "peak_extra_x_grad", fixed(2)),
    Column("check", "check"),
    report.NOTE_COLUMN,
]

NOTES = (
    "Columns: median time of one forward+backward; GB/s counts only ((K+1)·B·C inputs read + B·C gradient "
    "written) × element size; copy GB/s is `dst.copy_(src)` of the inputs' byte count on the same device in the "
    "same run (2 × bytes / time), and x copy = GB/s ÷ copy GB/s; vs eager / vs compile are median-time ratios; "
    "peak extra memory is allocated on top of the inputs during one forward+backward, the returned gradient "
    "included (CUDA: max_memory_allocated delta; CPU: the profiler's memory events), also as a multiple of one "
    "B×C gradient; check compares the gradient with the eager composite's."
)


def group_of(row: dict) -> tuple:
    return row["grid"], row["K"], row["B"], row["C"], row["dtype"]
