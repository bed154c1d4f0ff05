"""Triton kernels (``compressor.kernels``) against the pure-PyTorch reference, on fresh random inputs.

Without a GPU, ``tests/conftest.py`` sets ``TRITON_INTERPRET=1`` before anything imports Triton, so the same kernels
run through Triton's interpreter on CPU tensors; with a GPU they run compiled on CUDA tensors. Nothing here skips.
"""

from __future__ import annotations

import contextlib
import itertools
import math

import compressor.kernels  # registers torch.ops.compressor.*_triton
import pytest
import torch
from kd_cases import (
    TOLERANCES,
    check_average_float8,
    check_extreme_offsets,
    check_kd_mixed_dtypes,
    comparable_rows,
    gate_for,
    grad_tolerance,
    make_inputs,
    no_host_sync,
    option_cases,
    shape_cases,
)
from triton.runtime.interpreter import InterpretedFunction

from compressor import ops, reference
from compressor._ext import triton_interpreted

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
LOW_PRECISION = (torch.bfloat16, torch.float16)
TAUS = (0.5, 1.0, 4.0)  # tau == 1 takes the kernel's shared-exponential path


def _check_kd(k, b, c, dtype, mode, gate_on, weights_2d, renormalize, tau):
    s, t, w = make_inputs(k, b, c, dtype=dtype, weights_2d=weights_2d, device=DEVICE)
    _, _, entropy_ref = reference.multi_teacher_kd(s, t, w, temperature=tau, mode=mode)
    chi = gate_for(entropy_ref, gate_on)
    kwargs = dict(temperature=tau, gate_threshold=chi, mode=mode, renormalize=renormalize)
    case = f"K={k} B={b} C={c} {dtype} {mode} gate={gate_on} w2d={weights_2d} renorm={renormalize} tau={tau}"

    s_ker = s.clone().requires_grad_(True)
    with no_host_sync(DEVICE):
        loss, keep, entropy = ops.multi_teacher_kd(s_ker, t, w, impl="triton", **kwargs)
    s_ref = s.clone().requires_grad_(True)
    loss_ref, keep_ref, entropy_ref = reference.multi_teacher_kd(s_ref, t, w, **kwargs)

    acc = reference.accumulation_dtype(dtype)
    assert loss.dtype == acc and entropy.dtype == acc and keep.dtype == torch.bool, case
    assert loss.shape == (b,) and keep.shape == (k, b) and entropy.shape == (k, b), case
    assert not entropy.requires_grad and not keep.requires_grad, case
    atol, rtol = TOLERANCES[dtype]
    torch.testing.assert_close(entropy, entropy_ref, atol=atol, rtol=rtol, msg=lambda m: f"entropy, {case}: {m}")
    rows = comparable_rows(keep, keep_ref, entropy, entropy_ref, chi, dtype)
    torch.testing.assert_close(loss[rows], loss_ref[rows], atol=atol, rtol=rtol, msg=lambda m: f"loss, {case}: {m}")

    upstream = torch.randn(b, dtype=acc, device=DEVICE)
    (grad,) = torch.autograd.grad(loss, s_ker, upstream)
    (grad_ref,) = torch.autograd.grad(loss_ref, s_ref, upstream)
    assert grad.dtype == dtype, case
    g_atol, g_rtol = grad_tolerance(dtype, roundings=3)
    torch.testing.assert_close(
        grad[rows], grad_ref[rows], atol=g_atol, rtol=g_rtol, msg=lambda m: f"backward, {case}: {m}"
    )


@pytest.mark.parametrize("k,b,c", shape_cases())
def test_multi_teacher_kd_float32(k, b, c):
    """Every (K, C) pair, B odd and even; every mode / gate / weight shape / renormalisation combination.

    The widest rows (C = 5000, the slowest under the interpreter) take the 8 combinations with ``weights_2d !=
    renormalize`` or ``==`` by K's parity: both modes and both gate settings for every K, all 16 across the K values.
    """
    for i, (mode, gate_on, weights_2d, renormalize) in enumerate(option_cases()):
        if c >= 5000 and (weights_2d != renormalize) != bool(k % 2):
            continue
        _check_kd(k, b, c, torch.float32, mode, gate_on, weights_2d, renormalize, TAUS[(i + k + c) % 3])


@pytest.mark.parametrize("dtype", LOW_PRECISION, ids=str)
@pytest.mark.parametrize("k,b,c", shape_cases())
def test_multi_teacher_kd_half_precision(k, b, c, dtype):
    """bf16 and fp16 inputs (fp32 accumulation): every shape, and across the shapes every option combination."""
    options = option_cases()
    index = shape_cases().index((k, b, c))
    for j in range(4):  # 4 of the 16 combinations per shape, rotating so that all 16 are covered per dtype
        mode, gate_on, weights_2d, renormalize = options[(4 * index + j) % len(options)]
        _check_kd(k, b, c, dtype, mode, gate_on, weights_2d, renormalize, TAUS[(index + j) % 3])


@pytest.mark.parametrize("dtype", (torch.float32, torch.bfloat16), ids=str)
@pytest.mark.parametrize("mode", ("multiclass", "multilabel"))
def test_multi_teacher_kd_raw_gradient(mode, dtype):
    """The op's 4th output (the per-row gradient written during the forward) against the closed form, rounded once."""
    for k, b, c in ((1, 3, 7), (2, 4, 1000), (5, 3, 100), (8, 2, 5000)):
        s, t, w = make_inputs(k, b, c, dtype=dtype, weights_2d=True, device=DEVICE)
        _, _, entropy_ref = reference.multi_teacher_kd(s, t, w, temperature=0.8, mode=mode)
        chi = gate_for(entropy_ref, True)
        loss, keep, entropy, raw = torch.ops.compressor.multi_teacher_kd_triton(
            s, t, w, 0.8, chi, mode == "multilabel", True
        )
        assert raw.dtype == dtype and raw.shape == (b, c)
        closed = reference.multi_teacher_kd_grad(
            s, t, w, temperature=0.8, gate_threshold=chi, mode=mode, renormalize=True
        )
        _, keep_ref, entropy_ref = reference.multi_teacher_kd(s, t, w, temperature=0.8, gate_threshold=chi, mode=mode)
        rows = comparable_rows(keep, keep_ref, entropy, entropy_ref, chi, dtype)
        atol, rtol = grad_tolerance(dtype, roundings=1)
        torch.testing.assert_close(raw[rows].float(), closed[rows], atol=atol, rtol=rtol)


@pytest.mark.parametrize("mode", ("multiclass", "multilabel"))
def test_multi_teacher_kd_many_chunks(mode, monkeypatch):
    """The smallest chunk (16 columns) for every K: many online-softmax merges and a ragged last chunk."""
    from compressor.kernels import multi_teacher_kd as module

    real = module.launch_config
    monkeypatch.setattr(module, "launch_config", lambda c, k, dtype, interpreted=False: (real(c, k, dtype)[0], 16, 1))
    for i, k in enumerate((1, 2, 5, 8)):
        _check_kd(k, 3 + i % 2, 150, torch.float32, mode, i % 2 == 0, i < 2, i % 3 == 0, TAUS[i % 3])


@pytest.mark.parametrize("mode", ("multiclass", "multilabel"))
def test_multi_teacher_kd_float64(mode):
    """float64 inputs compute in float64 (tau and chi reach the kernel to ~48 bits)."""
    for (k, b, c), renormalize in zip(((1, 3, 7), (5, 4, 1000), (8, 3, 5000)), (False, True, True), strict=True):
        _check_kd(k, b, c, torch.float64, mode, True, True, renormalize, 0.3)


@pytest.mark.parametrize("mode", ("multiclass", "multilabel"))
def test_multi_teacher_kd_extreme_logits(mode):
    """Large offsets and very confident teachers: the centred online statistics must not lose precision."""
    check_extreme_offsets("triton", mode, device=DEVICE)


@pytest.mark.parametrize("renormalize", (False, True))
def test_multi_teacher_kd_nothing_kept(renormalize):
    """A gate that drops every teacher: loss 0 and a zero gradient (no 0/0 from renormalisation)."""
    s, t, w = make_inputs(5, 3, 300, weights_2d=True, device=DEVICE)
    s.requires_grad_(True)
    loss, keep, _ = ops.multi_teacher_kd(
        s, t, w, temperature=2.0, gate_threshold=0.0, renormalize=renormalize, impl="triton"
    )
    assert not keep.any()
    assert torch.equal(loss, torch.zeros_like(loss))
    (grad,) = torch.autograd.grad(loss.sum(), s)
    assert torch.equal(grad, torch.zeros_like(grad))


@pytest.mark.parametrize("mode", ("multiclass", "multilabel"))
def test_multi_teacher_kd_empty(mode):
    """B = 0 and C = 0 follow the reference (C = 0: KL 0; entropy 0 multiclass, NaN = not kept multilabel)."""
    for b, c in ((0, 5), (3, 0)):
        s, t, w = make_inputs(2, b, c, device=DEVICE)
        out = ops.multi_teacher_kd(s, t, w, temperature=1.5, mode=mode, impl="triton")
        ref = reference.multi_teacher_kd(s, t, w, temperature=1.5, mode=mode)
        for got, want in zip(out, ref, strict=True):
            assert got.shape == want.shape and got.dtype == want.dtype
            torch.testing.assert_close(got, want, equal_nan=True)


@pytest.mark.parametrize("multilabel", (False, True))
def test_multi_teacher_kd_opcheck(multilabel):
    """Schema, fake tensor, autograd registration and AOT dispatch (dynamic shapes) of the Triton op."""
    k, b, c = 3, 5, 37
    s, t, w = make_inputs(k, b, c, weights_2d=True, device=DEVICE)
    for renormalize, chi in ((False, math.inf), (True, 1.2)):
        torch.library.opcheck(
            torch.ops.compressor.multi_teacher_kd_triton.default,
            (s.clone().requires_grad_(True), t, w, 0.8, chi, multilabel, renormalize),
        )


def test_multi_teacher_kd_compile_fullgraph():
    """torch.compile(fullgraph=True) through the op, forward and backward (Inductor on CUDA, aot_eager on CPU)."""
    k, b, c = 4, 6, 200
    s, t, w = make_inputs(k, b, c, weights_2d=True, device=DEVICE)

    def step(student, teacher, weights):
        loss, keep, entropy, _ = torch.ops.compressor.multi_teacher_kd_triton(
            student, teacher, weights, 2.0, 2.5, False, True
        )
        return loss.mean(), keep, entropy

    compiled = torch.compile(step, fullgraph=True, backend="inductor" if DEVICE.type == "cuda" else "aot_eager")
    s1 = s.clone().requires_grad_(True)
    loss, keep, entropy = compiled(s1, t, w)
    loss.backward()
    s2 = s.clone().requires_grad_(True)
    loss_ref, keep_ref, entropy_ref = reference.multi_teacher_kd(
        s2, t, w, temperature=2.0, gate_threshold=2.5, renormalize=True
    )
    loss_ref.mean().backward()
    torch.testing.assert_close(loss, loss_ref.mean())
    torch.testing.assert_close(entropy, entropy_ref)
    assert torch.equal(keep, keep_ref)
    torch.testing.assert_close(s1.grad, s2.grad)


def test_interpreted_is_the_kernels_choice(monkeypatch):
    """Once the kernels exist, a changed TRITON_INTERPRET changes neither the launch nor what ``ops`` offers."""
    interpreted = isinstance(compressor.kernels.multi_teacher_kd._multi_teacher_kd_kernel, InterpretedFunction)
    monkeypatch.setenv("TRITON_INTERPRET", "0" if interpreted else "1")
    assert triton_interpreted() == interpreted
    assert ("triton" in ops.available_impls("cpu")) == interpreted


def test_multi_teacher_kd_mixed_dtypes():
    """Student, teachers and weights in different dtypes: the reference's contract (compressor/reference.py)."""
    check_kd_mixed_dtypes("triton", device=DEVICE)


def test_multi_teacher_kd_asserts_its_input_form():
    """The op only asserts the form compressor.ops brings arguments to (RuntimeError), as the C++ kernels do."""
    s, t, w = make_inputs(2, 3, 10, device=DEVICE)
    op = torch.ops.compressor.multi_teacher_kd_triton
    for args, match in (
        ((s, t, w.double()), "weights must be"),
        ((s.t().contiguous().t(), t, w), "contiguous"),
        ((s, t.half(), w), "share one of"),
        ((s, t[:, :2], w), "does not match"),
    ):
        with pytest.raises(RuntimeError, match=match):
            op(*args, 1.0, math.inf, False, False)
    with pytest.raises(RuntimeError, match="temperature"):
        op(s, t, w, 0.0, math.inf, False, False)


# ---------------------------------------------------------------------------------------------------------------
# average_weights_triton_
# ---------------------------------------------------------------------------------------------------------------


def _random_like(dtype: torch.dtype, shape: tuple[int, ...], gen: torch.Generator) -> torch.Tensor:
    if dtype.is_floating_point or dtype.is_complex:
        x = torch.randn(shape, generator=gen, dtype=torch.float64 if dtype != torch.complex64 else torch.complex64)
        return x.to(dtype).to(DEVICE)
    if dtype == torch.bool:
        return (torch.rand(shape, generator=gen) > 0.5).to(DEVICE)
    return torch.randint(-1000, 1000, shape, generator=gen, dtype=dtype).to(DEVICE)


# Odd sizes (1, 7, 1000003: many chunks and a ragged last one), every float dtype, integer and bool buffers.
MIXED = [
    (torch.float32, (1,)),
    (torch.bfloat16, (7,)),
    (torch.float16, (1000003,)),
    (torch.int64, ()),  # e.g. BatchNorm's num_batches_tracked
    (torch.float32, (33, 17)),
    (torch.bfloat16, (40000,)),
    (torch.float32, (1000003,)),
    (torch.bool, (5,)),
    (torch.int32, (9,)),
    (torch.float64, (4099,)),
    (torch.float16, (0,)),
]


def _float_tolerance(dtype: torch.dtype) -> dict:
    # Compiled, the update may use a fused multiply-add (one rounding instead of two): one ulp of slack.
    eps = torch.finfo(dtype).eps
    return dict(atol=4 * eps, rtol=eps)


def _assert_averaged(got: list[torch.Tensor], want: list[torch.Tensor]) -> None:
    for i, (g, r) in enumerate(zip(got, want, strict=True)):
        assert g.dtype == r.dtype and g.shape == r.shape, i
        if g.dtype.is_floating_point:
            torch.testing.assert_close(g, r, **_float_tolerance(g.dtype), msg=lambda m, i=i: f"tensor {i}: {m}")
        else:
            assert torch.equal(g, r), f"tensor {i} ({g.dtype}) not copied"


@pytest.mark.parametrize("weight_kind", ("float", "tensor"))
def test_average_weights_mixed_list(weight_kind):
    gen = torch.Generator().manual_seed(torch.seed() % 2**31)
    averaged = [_random_like(d, s, gen) for d, s in MIXED]
    current = [_random_like(d, s, gen) for d, s in MIXED]
    expected = [a.clone() for a in averaged]
    weight = 0.3 if weight_kind == "float" else torch.tensor(0.3, device=DEVICE)
    # A Python weight reaches float64 tensors as float64, a float32 tensor weight as float32(0.3): the reference
    # gets the same weight.
    reference.average_weights_(expected, current, 0.3 if weight_kind == "float" else torch.tensor(0.3))
    storages = [a.data_ptr() for a in averaged]
    with no_host_sync(DEVICE) if weight_kind == "tensor" else contextlib.nullcontext():
        ops.average_weights_(averaged, current, weight, impl="triton")
    assert [a.data_ptr() for a in averaged] == storages  # in place
    _assert_averaged(averaged, expected)
    # Same storages again: the cached chunk table is reused, and the update sees the new values.
    reference.average_weights_(expected, current, torch.tensor(0.75))
    ops.average_weights_(averaged, current, 0.75, impl="triton")
    _assert_averaged(averaged, expected)


def test_average_weights_float8():
    check_average_float8("triton", device=DEVICE)


def test_average_weights_layouts():
    """Dense non-contiguous tensors (channels_last, transposed) use the kernel; strided views the torch fallback."""
    gen = torch.Generator().manual_seed(torch.seed() % 2**31)
    base_a = [_random_like(torch.float32, (6, 10), gen), _random_like(torch.bfloat16, (6, 10), gen)]
    base_c = [_random_like(torch.float32, (6, 10), gen), _random_like(torch.bfloat16, (6, 10), gen)]
    conv_a = _random_like(torch.float32, (2, 3, 5, 4), gen).to(memory_format=torch.channels_last)
    conv_c = _random_like(torch.float32, (2, 3, 5, 4), gen).to(memory_format=torch.channels_last)
    averaged = [base_a[0].t(), base_a[1][:, ::3], conv_a]
    current = [base_c[0].t(), base_c[1][:, ::3], conv_c]
    untouched = base_a[1][:, 1::3].clone()
    expected = [a.clone() for a in averaged]
    reference.average_weights_(expected, current, torch.tensor(0.4))
    ops.average_weights_(averaged, current, torch.tensor(0.4, device=DEVICE), impl="triton")
    _assert_averaged(averaged, expected)
    assert torch.equal(base_a[1][:, 1::3], untouched)  # the strided view's neighbours are left alone


@pytest.mark.parametrize("dtype", (torch.float32, torch.bfloat16, torch.float16, torch.int64), ids=str)
def test_average_weights_running_mean(dtype):
    """weight = 1 / (n + 1) over snapshots gives their arithmetic mean (RoS-KD Eq. 1); integers keep the last."""
    gen = torch.Generator().manual_seed(torch.seed() % 2**31)
    snapshots = [[_random_like(dtype, (1000,), gen), _random_like(dtype, (7,), gen)] for _ in range(6)]
    averaged = [t.clone() for t in snapshots[0]]
    expected = [t.clone() for t in snapshots[0]]
    for n, snap in enumerate(snapshots[1:], start=1):
        ops.average_weights_(averaged, snap, torch.tensor(1.0 / (n + 1), device=DEVICE), impl="triton")
        reference.average_weights_(expected, snap, torch.tensor(1.0 / (n + 1), device=DEVICE))
    _assert_averaged(averaged, expected)
    for i, got in enumerate(averaged):
        stacked = torch.stack([s[i] for s in snapshots])
        if dtype.is_floating_point:
            # Each of the 5 steps rounds to the storage dtype (half an ulp, eps/2 relative, of a value no larger than
            # the largest input): the distance to the exact mean stays within 5 * eps/2 * max|x| (fp32: ~1e-6).
            bound = 2.5 * torch.finfo(dtype).eps * float(stacked.double().abs().max())
            torch.testing.assert_close(got.double(), stacked.double().mean(0), atol=bound, rtol=0)
        else:
            assert torch.equal(got, stacked[-1])


def test_average_weights_ema_matches_reference():
    gen = torch.Generator().manual_seed(torch.seed() % 2**31)
    specs = [(torch.bfloat16, (513,)), (torch.float32, (77,)), (torch.int64, (3,))]
    averaged = [_random_like(d, s, gen) for d, s in specs]
    expected = [a.clone() for a in averaged]
    weight = torch.tensor(1 - 0.99, device=DEVICE)
    for _ in range(5):
        current = [_random_like(d, s, gen) for d, s in specs]
        reference.average_weights_(expected, current, weight)
        ops.average_weights_(averaged, current, weight, impl="triton")
    _assert_averaged(averaged, expected)


def test_average_weights_complex():
    """Complex tensors are averaged as their real and imaginary parts."""
    gen = torch.Generator().manual_seed(torch.seed() % 2**31)
    a = _random_like(torch.complex64, (11,), gen)
    c = _random_like(torch.complex64, (11,), gen)
    want = a + (c - a) * 0.25
    torch.ops.compressor.average_weights_triton_([a], [c], torch.tensor(0.25, device=DEVICE))
    torch.testing.assert_close(a, want)


def test_average_weights_opcheck_and_compile():
    gen = torch.Generator().manual_seed(0)
    specs = [(torch.float32, (5,)), (torch.bfloat16, (3, 3)), (torch.int64, (2,))]
    averaged = [_random_like(d, s, gen) for d, s in specs]
    current = [_random_like(d, s, gen) for d, s in specs]
    weight = torch.tensor(0.25, device=DEVICE)
    torch.library.opcheck(torch.ops.compressor.average_weights_triton_.default, (averaged, current, weight))

    def step(avg, cur, w):
        torch.ops.compressor.average_weights_triton_(avg, cur, w)
        return avg[0] * 2

    expected = [a.clone() for a in averaged]
    reference.average_weights_(expected, current, weight)
    out = torch.compile(step, fullgraph=True, backend="inductor" if DEVICE.type == "cuda" else "aot_eager")(
        averaged, current, weight
    )
    _assert_averaged(averaged, expected)
    torch.testing.assert_close(out, expected[0] * 2)


def test_average_weights_rejects_mismatch():
    a = [torch.zeros(3, device=DEVICE)]
    with pytest.raises(RuntimeError):
        torch.ops.compressor.average_weights_triton_(
            a, [torch.zeros(4, device=DEVICE)], torch.tensor(0.5, device=DEVICE)
        )
    with pytest.raises(RuntimeError):
        torch.ops.compressor.average_weights_triton_(a, [], torch.tensor(0.5, device=DEVICE))


def test_all_shape_and_option_cases_are_covered():
    """Guard on the case lists: every K and C, B odd and even, all 16 option combinations."""
    shapes = shape_cases()
    assert {k for k, _, _ in shapes} == {1, 2, 5, 8} and {c for _, _, c in shapes} == {1, 2, 7, 100, 1000, 5000}
    assert {b % 2 for _, b, _ in shapes} == {0, 1}
    covered = {option_cases()[(4 * i + j) % 16] for i, j in itertools.product(range(len(shapes)), range(4))}
    assert len(covered) == 16
