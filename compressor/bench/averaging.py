"""The ``average_weights_`` benchmark: ours (per implementation) vs ``torch._foreach_lerp_`` vs a per-tensor loop.

Cases:

* ``resnet18``: the state dict of ``torchvision.models.resnet18(weights=None)`` (parameters and buffers, 11.7M
  floating elements in 102 tensors plus 20 integer ``num_batches_tracked`` counters, which are copied).
* ``many-small``: float32 tensors whose sizes are drawn log-uniformly between 2^6 and 2^18 elements (mean about
  31k, so 100M parameters is about 3,200 tensors: 3,231 with the default seed), up to the requested total (default
  100M).

Providers: ``reference``/``cpp``/``cuda``/``triton`` call ``compressor.ops.average_weights_(..., impl=name)`` with
the weight as a 0-d tensor on the device (the host-sync-free way to call it); ``foreach_lerp`` is
``torch._foreach_lerp_(avg, cur, w)`` with a Python float (plus ``torch._foreach_copy_`` for integer tensors);
``loop`` is ``a.lerp_(c, w)`` (``a.copy_(c)`` for integers) per tensor.

Columns: ``gbps`` counts 2 reads + 1 write per floating element (1 read + 1 write per integer element) over the
median time; ``copy_gbps`` is ``dst.copy_(src)`` of one flat buffer of the floating bytes (``2 * bytes / time``);
``copy_ratio = gbps / copy_gbps``. On CUDA, ``sync_free`` runs one call of ours under
``torch.cuda.set_sync_debug_mode("error")`` with a device-tensor weight (and ``sync_free_float`` with a Python
float weight, which has to be copied to the device), and ``graph`` captures one call in a CUDA graph, replays it
and compares with the reference.
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Sequence

import torch

from compressor import ops, reference
from compressor.bench import report
from compressor.bench.memory import release
from compressor.bench.report import Column, fixed, times
from compressor.bench.timers import copy_bandwidth, measure

BASELINES = ("foreach_lerp", "loop")
PROVIDERS = ops.IMPLS + BASELINES
WEIGHT = 0.1
DEFAULT_PARAMS = 100_000_000  # the many-small case of the issue, on every device (about 30 s on two CPU cores)
# a row's measured figures, in the JSON's column order: None until measured (and where not measured)
MEASURED = ("median_ms", "gbps", "copy_gbps", "copy_ratio", "speedup_vs_foreach", "speedup_vs_loop", "check",
            "sync_free", "sync_free_float", "graph", "error")


def resnet18_state(device: torch.device | str) -> list[torch.Tensor]:
    """Parameters and buffers of a randomly initialised torchvision ResNet-18 (no download)."""
    import torchvision

    model = torchvision.models.resnet18(weights=None)
    return [t.detach().to(device).clone() for t in model.state_dict().values()]


def many_small_state(total_params: int, device: torch.device | str, *, seed: int = 0) -> list[torch.Tensor]:
    """Float32 tensors with log-uniform sizes in [2^6, 2^18] elements, ``total_params`` elements in all."""
    gen = torch.Generator().manual_seed(seed)
    sizes, total = [], 0
    while total < total_params:
        n = int(2 ** (6 + 12 * float(torch.rand((), generator=gen))))
        n = min(n, total_params - total)
        sizes.append(n)
        total += n
    flat = torch.randn(total, generator=gen).to(device)
    return [t.clone() for t in torch.split(flat, sizes)]


def make_pair(state: list[torch.Tensor], seed: int = 1) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """(averaged, current): clones of ``state``, ``current`` perturbed so the update is not a no-op."""
    gen = torch.Generator(device=state[0].device).manual_seed(seed)
    averaged = [t.clone() for t in state]
    current = []
    for t in state:
        c = t.clone()
        if c.is_floating_point():
            c.add_(torch.randn(c.shape, generator=gen, device=c.device, dtype=c.dtype))
        else:
            c.add_(1)
        current.append(c)
    return averaged, current


def _split(averaged, current):
    floats = [(a, c) for a, c in zip(averaged, current, strict=True) if a.is_floating_point()]
    ints = [(a, c) for a, c in zip(averaged, current, strict=True) if not a.is_floating_point()]
    return [a for a, _ in floats], [c for _, c in floats], [a for a, _ in ints], [c for _, c in ints]


def make_step(provider: str, averaged: list[torch.Tensor], current: list[torch.Tensor]) -> Callable[[], None]:
    """A closure applying one averaging update with ``provider`` (in place on ``averaged``)."""
    device = averaged[0].device
    if provider in ops.IMPLS:
        ops.resolve_impl(provider, device)  # raises with the list of what is available
        weight = torch.tensor(WEIGHT, dtype=torch.float32, device=device)
        return lambda: ops.average_weights_(averaged, current, weight, impl=provider)
    avg_f, cur_f, avg_i, cur_i = _split(averaged, current)
    if provider == "foreach_lerp":

        def step():
            torch._foreach_lerp_(avg_f, cur_f, WEIGHT)
            if avg_i:
                torch._foreach_copy_(avg_i, cur_i)

        return step
    if provider == "loop":

        def step():
            for a, c in zip(averaged, current, strict=True):
                if a.is_floating_point():
                    a.lerp_(c, WEIGHT)
                else:
                    a.copy_(c)

        return step
    raise ValueError(f"unknown provider {provider!r}; choose from {', '.join(PROVIDERS)}")


def available_providers(device: torch.device | str) -> list[str]:
    """Implementations available on ``device`` (interpreted Triton left out on the CPU), then the baselines."""
    return [*report.timed_impls(device), *BASELINES]


def _check(provider: str, state: list[torch.Tensor]) -> float:
    """Max abs difference between one update by ``provider`` and the reference, relative to max |value|."""
    averaged, current = make_pair(state)
    expected = [a.clone() for a in averaged]
    reference.average_weights_(expected, current, WEIGHT)
    make_step(provider, averaged, current)()
    err = max(float((a.double() - e.double()).abs().max()) for a, e in zip(averaged, expected, strict=True))
    scale = max(float(e.double().abs().max()) for e in expected)
    return err / max(scale, 1e-30)


def sync_free(provider: str, averaged, current, weight) -> str:
    """Run one call of ours under ``set_sync_debug_mode("error")``: "yes", or "no: <what synchronised>"."""
    torch.cuda.synchronize()
    previous = torch.cuda.get_sync_debug_mode()
    torch.cuda.set_sync_debug_mode("error")
    try:
        ops.average_weights_(averaged, current, weight, impl=provider)
        result = "yes"
    except RuntimeError as exc:
        result = "no: " + report.first_line(exc)[:100]
    finally:
        torch.cuda.set_sync_debug_mode(previous)
    torch.cuda.synchronize()
    return result


def _graph_capturable(provider: str, state: list[torch.Tensor]) -> str:
    """Capture one call in a CUDA graph, replay it and compare with the reference: "yes" or "no: <why>"."""
    averaged, current = make_pair(state)
    weight = torch.tensor(WEIGHT, dtype=torch.float32, device=averaged[0].device)
    expected = [a.clone() for a in averaged]
    reference.average_weights_(expected, current, WEIGHT)
    try:
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):  # warm-up outside capture (Triton compiles here), then undo it
            snapshot = [a.clone() for a in averaged]
            ops.average_weights_(averaged, current, weight, impl=provider)
            torch._foreach_copy_(averaged, snapshot)
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            ops.average_weights_(averaged, current, weight, impl=provider)
        graph.replay()
        torch.cuda.synchronize()
    except Exception as exc:  # capture failures come as several exception types
        torch.cuda.synchronize()
        return "no: " + report.first_line(exc)[:100]
    ok = all(torch.allclose(a, e, rtol=1e-5, atol=1e-6) for a, e in zip(averaged, expected, strict=True))
    return "yes" if ok else "no: replay differs from the reference"


def bench_case(
    name: str,
    state: list[torch.Tensor],
    providers: Sequence[str],
    device: torch.device,
    *,
    available: Sequence[str],
    timing: dict | None = None,
) -> list[dict]:
    """Rows for one tensor list."""
    timing = dict(timing or {})
    float_bytes = sum(t.nbytes for t in state if t.is_floating_point())
    int_bytes = sum(t.nbytes for t in state if not t.is_floating_point())
    moved = 3 * float_bytes + 2 * int_bytes
    params = sum(t.numel() for t in state if t.is_floating_point())
    copy_gbps = copy_bandwidth(float_bytes, device, **timing)
    rows = []
    for provider in providers:
        row = {"case": name, "params_m": params / 1e6, "tensors": len(state), "provider": provider, "bytes": moved,
               **dict.fromkeys(MEASURED)}
        row["copy_gbps"] = copy_gbps
        rows.append(row)
        if provider not in available:
            row["error"] = f"not available here (available: {', '.join(available)})"
            continue
        try:
            rel = _check(provider, state)
            row["check"] = "ok" if rel <= 1e-5 else f"MISMATCH ({rel:.1e})"
            averaged, current = make_pair(state)
            report.add_timing(row, measure(make_step(provider, averaged, current), device, **timing), moved)
            if device.type == "cuda" and provider in ops.IMPLS:
                weight = torch.tensor(WEIGHT, dtype=torch.float32, device=device)
                row["sync_free"] = sync_free(provider, averaged, current, weight)
                row["sync_free_float"] = sync_free(provider, averaged, current, WEIGHT)
            del averaged, current
        except Exception as exc:  # one failing provider must not stop the table
            row["error"] = report.error_text(exc)
        gc.collect()
    if device.type == "cuda":  # last: a failed capture must not disturb the timings
        for row in rows:
            if row["provider"] in ops.IMPLS and row["median_ms"] is not None:
                row["graph"] = _graph_capturable(row["provider"], state)
    report.add_speedups(rows, {"foreach_lerp": "speedup_vs_foreach", "loop": "speedup_vs_loop"})
    return rows


def run_averaging(
    device: torch.device | str,
    *,
    providers: Sequence[str] | None = None,
    params: int = DEFAULT_PARAMS,
    resnet: bool = True,
    timing: dict | None = None,
    on_case: Callable[[str, list[dict]], None] | None = None,
) -> list[dict]:
    """ResNet-18 (unless ``resnet=False``) and the many-small list of ``params`` elements (default 100M)."""
    device = torch.device(device)
    available = available_providers(device)
    providers = report.select_providers(providers, available, PROVIDERS)
    cases = []
    if resnet:
        cases.append(("resnet18", lambda: resnet18_state(device)))
    millions = params / 1e6
    label = f"many-small-{millions:.0f}M" if millions >= 1 else f"many-small-{params}"
    cases.append((label, lambda: many_small_state(params, device)))
    rows: list[dict] = []
    for name, build in cases:
        state = build()
        rows += bench_case(name, state, providers, device, available=available, timing=timing)
        del state
        release(device)
        if on_case is not None:
            on_case(name, rows)
    return rows


def _fmt_params(v: object) -> str:
    return f"{v:.1f}M" if v >= 1 else f"{v * 1e3:.0f}k"


COLUMNS = [
    Column("case", "case"),
    Column("params", "params_m", _fmt_params),
    Column("tensors", "tensors"),
    Column("provider", "provider"),
    Column("ms", "median_ms", fixed(3)),
    *report.BANDWIDTH_COLUMNS,
    Column("vs foreach_lerp", "speedup_vs_foreach", times),
    Column("vs loop", "speedup_vs_loop", times),
    Column("check", "check"),
    Column("no sync (tensor w)", "sync_free"),
    Column("no sync (float w)", "sync_free_float"),
    Column("graph", "graph"),
    report.NOTE_COLUMN,
]

NOTES = (
    "GB/s counts 2 reads + 1 write per floating element (1 + 1 per integer buffer) over the median time; copy GB/s "
    "is `dst.copy_(src)` of one flat buffer of the floating bytes (2 × bytes / time) in the same run; x copy = GB/s "
    "÷ copy GB/s. Ours is called with the weight as a 0-d device tensor; `foreach_lerp` is `torch._foreach_lerp_` "
    "with a float weight; `loop` is `lerp_` per tensor. No sync: one call under "
    '`torch.cuda.set_sync_debug_mode("error")`; graph: captured in a CUDA graph, replayed, compared with the reference.'
)


