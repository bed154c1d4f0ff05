"""Smoke test of the benchmark table builders (compressor.bench) on tiny CPU shapes: columns present, values sane."""

from __future__ import annotations

import json
import math
import statistics

import pytest
import torch
from click.testing import CliRunner

from compressor import ops
from compressor.bench import averaging, kernels_table
from compressor.bench.cli import bench
from tests.method_cases import one_thread  # noqa: F401  (fixture: tiny shapes gain nothing from more threads)

FAST = {"seconds": 0.0}
KD_COLUMNS = {c.key for c in kernels_table.COLUMNS}


def _cpu_impls() -> list[str]:
    return [n for n in ("reference", "cpp") if n in ops.available_impls("cpu")]


def test_kernel_rows_have_every_column_and_consistent_values():
    shapes = [kernels_table.Shape("classification", 3, 8, 16, torch.float32)]
    providers = ["eager", *_cpu_impls()]
    rows = kernels_table.run_grid(shapes, "cpu", providers=providers, timing=FAST)
    assert len(rows) == len(shapes) * len(providers)
    for row in rows:
        assert KD_COLUMNS <= row.keys()
        assert row["error"] is None, row
        assert row["median_ms"] > 0 and row["gbps"] > 0 and row["copy_gbps"] > 0
        k, b, c = row["K"], row["B"], row["C"]
        assert row["bytes"] == (k + 2) * b * c * 4  # (K+1) inputs read + 1 gradient written, float32
        assert math.isclose(row["gbps"], row["bytes"] / (row["median_ms"] / 1e3) / 1e9, rel_tol=1e-9)
        assert math.isclose(row["copy_ratio"], row["gbps"] / row["copy_gbps"], rel_tol=1e-9)
        eager = next(r for r in rows if r["provider"] == "eager" and (r["K"], r["C"]) == (k, c))
        assert math.isclose(row["speedup_vs_eager"], eager["median_ms"] / row["median_ms"], rel_tol=1e-9)
        assert row["speedup_vs_compile"] is None  # compile was not run
        assert row["check"] == "ok" and row["max_rel_err"] < 1e-3
        if row["peak_extra_bytes"] is not None:  # the returned gradient at least
            assert row["peak_extra_bytes"] >= b * c * 4
            assert math.isclose(row["peak_extra_x_grad"], row["peak_extra_bytes"] / (b * c * 4))


def test_cpu_clock_measures_the_process_cpu_time():
    """--clock cpu times with time.process_time: a sleeping call costs (almost) no CPU time, a computing one does."""
    import time

    from compressor.bench.timers import measure

    x = torch.randn(200, 200)
    assert statistics.median(measure(lambda: time.sleep(0.002), "cpu", seconds=0.05, clock="cpu")) < 1e-3
    assert statistics.median(measure(lambda: time.sleep(0.002), "cpu", seconds=0.05)) >= 2e-3
    assert statistics.median(measure(lambda: x @ x, "cpu", seconds=0.05, clock="cpu")) > 0
    with pytest.raises(ValueError, match="clock"):
        measure(lambda: None, "cpu", clock="gpu")
    result = CliRunner().invoke(bench, ["kernels", "--device", "cpu", "--clock", "cpu", "--quick", "--impl",
                                        "reference", "--seconds", "0", "--no-memory", "--max-seconds", "0"])
    assert result.exit_code == 0, result.output


def test_unavailable_provider_gets_a_row_that_says_so():
    shape = kernels_table.Shape("classification", 1, 4, 8, torch.float32)
    rows = kernels_table.run_grid([shape], "cpu", providers=["reference", "cuda"], timing=FAST, measure_memory=False)
    cuda = next(r for r in rows if r["provider"] == "cuda")
    assert cuda["median_ms"] is None and "not available" in cuda["error"]
    with pytest.raises(ValueError, match="unknown provider"):
        kernels_table.run_grid([shape], "cpu", providers=["nope"], timing=FAST)


def test_grids_match_the_issue():
    cls = kernels_table.classification_grid()
    assert {(s.b, s.c, s.k) for s in cls} == {(256, c, k) for c in (8, 100, 1000) for k in (1, 3, 5, 8)}
    big = kernels_table.large_vocab_grid()
    assert {(s.b, s.c, s.k, s.dtype) for s in big} == {
        (8192, c, k, torch.bfloat16) for c in (32768, 131072) for k in (1, 2, 4)
    }


def test_averaging_rows():
    state = averaging.many_small_state(20_000, "cpu")
    assert sum(t.numel() for t in state) == 20_000
    providers = [*_cpu_impls(), "foreach_lerp", "loop"]
    rows = averaging.bench_case("tiny", state, providers, torch.device("cpu"), available=providers, timing=FAST)
    for row in rows:
        assert row["error"] is None, row
        assert row["check"] == "ok"
        assert row["median_ms"] > 0 and row["gbps"] > 0 and row["copy_ratio"] > 0
        assert row["bytes"] == 3 * 20_000 * 4
        assert math.isclose(row["speedup_vs_loop"], rows[-1]["median_ms"] / row["median_ms"], rel_tol=1e-9)


def test_cli_writes_json_and_markdown(tmp_path):
    out_json, out_md = tmp_path / "k.json", tmp_path / "k.md"
    result = CliRunner().invoke(
        bench,
        ["kernels", "--device", "cpu", "--quick", "--impl", "reference", "--seconds", "0", "--no-memory",
         "--no-check", "--max-seconds", "0", "--json", str(out_json), "--markdown", str(out_md)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    data = json.loads(out_json.read_text())
    assert data["meta"]["device"] == "cpu" and data["rows"]
    assert "| K | B | C |" in out_md.read_text()


@pytest.mark.parametrize("provider", ("eager", "compile"))
def test_baselines_take_mixed_dtypes_like_the_reference(provider):
    """The benchmark's baselines (the eager composite and its torch.compile trace) on logits and weights of different
    dtypes agree with the reference: loss, keep, entropy and the student's gradient, fresh random inputs, odd shapes.

    tau = 2 divides logits exactly in any dtype, so the composite reads the inputs exactly as the reference does.
    """
    from kd_cases import comparable_rows, gate_for, grad_tolerance, make_inputs

    from compressor import reference
    from compressor.bench.kd_providers import eager_composite

    forward = eager_composite
    if provider == "compile":
        torch._dynamo.reset()
        # aot_eager traces what Inductor would compile (Dynamo + AOTAutograd) without its C++ build, minutes on 2 cores
        forward = torch.compile(eager_composite, dynamic=False, backend="aot_eager")
    cases = [(torch.bfloat16, torch.float32, torch.float16), (torch.float32, torch.float16, torch.bfloat16)]
    if provider == "eager":
        cases += [(torch.float16, torch.bfloat16, torch.float64), (torch.float32, torch.float64, torch.float32)]
    shapes = ((3, 5, 7), (2, 3, 33), (5, 7, 100), (1, 9, 2))[: len(cases)]
    for (s_dtype, t_dtype, w_dtype), (k, b, c) in zip(cases, shapes, strict=True):
        s, t, w = make_inputs(k, b, c, dtype=s_dtype)
        t, w = t.to(t_dtype), w.to(w_dtype)
        chi = gate_for(reference.multi_teacher_kd(s, t, w, temperature=2.0)[2], True)
        s_base, s_ref = s.clone().requires_grad_(True), s.clone().requires_grad_(True)
        loss, keep, entropy = forward(s_base, t, w, temperature=2.0, gate_threshold=chi)
        loss_ref, keep_ref, entropy_ref = reference.multi_teacher_kd(s_ref, t, w, temperature=2.0, gate_threshold=chi)
        case = f"{provider} K={k} B={b} C={c} student {s_dtype} teachers {t_dtype} weights {w_dtype}"
        torch.testing.assert_close(entropy.double(), entropy_ref.double(), atol=2e-5, rtol=2e-4, msg=case)
        rows = comparable_rows(keep, keep_ref, entropy, entropy_ref, chi, torch.float32)
        torch.testing.assert_close(loss[rows].double(), loss_ref[rows].double(), atol=2e-5, rtol=2e-4, msg=case)
        (grad,) = torch.autograd.grad(loss.sum(), s_base)
        (grad_ref,) = torch.autograd.grad(loss_ref.sum(), s_ref)
        assert grad.dtype == s_dtype, case
        atol, rtol = grad_tolerance(s_dtype, roundings=2)
        torch.testing.assert_close(grad[rows].float(), grad_ref[rows].float(), atol=atol, rtol=rtol, msg=case)
