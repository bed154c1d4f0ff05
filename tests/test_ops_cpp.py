"""The C++ CPU kernels (``impl="cpp"``) against the pure-PyTorch reference, on fresh random inputs.

``multi_teacher_kd``: every K in ``kd_cases.KS`` with every C in ``kd_cases.CS`` (B odd and even), both modes, gate
on / off, weights ``[K]`` / ``[K, B]``, renormalisation on / off, float32, bfloat16 and float16 (float64 separately),
the temperatures that take the kernel's shared-exponential paths, each of its SIMD code paths, and float64
``gradcheck`` of the reference and of the op. ``average_weights_``: every floating dtype, integer buffers, mixed and
empty lists, weight as a number and as a 0-d tensor, strided tensors, and the running mean of a snapshot sequence.
"""

from __future__ import annotations

import math

import pytest
import torch
from kd_cases import (
    KS,
    MODES,
    TOLERANCES,
    check_average_float8,
    check_extreme_offsets,
    check_kd_impl,
    check_kd_mixed_dtypes,
    check_strided_weights,
    comparable_rows,
    gate_for,
    grad_tolerance,
    make_inputs,
    shape_cases,
)

from compressor import ops, reference

pytestmark = pytest.mark.skipif("cpp" not in ops.available_impls("cpu"), reason="compressor._C is not built")

LOW_PRECISION = (torch.bfloat16, torch.float16)
GATE_W2D_RENORM = [(g, w, r) for g in (False, True) for w in (False, True) for r in (False, True)]


# ---------------------------------------------------------------------------------------------------------------------
# multi_teacher_kd
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("k,b,c", shape_cases())
def test_multi_teacher_kd_float32(k, b, c, mode):
    """float32, every (K, C) pair, every gate / weight-shape / renormalisation combination, two upstream gradients."""
    for gate_on, weights_2d, renormalize in GATE_W2D_RENORM:
        check_kd_impl(
            "cpp", k, b, c, mode=mode, gate_on=gate_on, weights_2d=weights_2d, renormalize=renormalize,
            temperature=0.7,
        )


@pytest.mark.parametrize("dtype", LOW_PRECISION, ids=str)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("k,b,c", shape_cases())
def test_multi_teacher_kd_low_precision(k, b, c, mode, dtype):
    """bf16 / fp16 inputs accumulate in float32; the gradient comes back in the input dtype. Each shape runs 4 of the
    8 gate / weight-shape / renormalisation combinations, rotating, so that every combination runs for every C."""
    start = 4 * (KS.index(k) % 2)  # K alternates between the two halves for every C
    for i in range(start, start + 4):
        gate_on, weights_2d, renormalize = GATE_W2D_RENORM[i]
        check_kd_impl(
            "cpp", k, b, c, dtype=dtype, mode=mode, gate_on=gate_on, weights_2d=weights_2d, renormalize=renormalize,
            temperature=(0.5, 2.0)[i % 2],
        )


@pytest.mark.parametrize("mode", MODES)
def test_multi_teacher_kd_float64(mode):
    """float64 computes in float64 (loss and entropy come back as float64)."""
    for (k, b, c), renormalize in zip(((1, 3, 7), (5, 4, 1000), (8, 3, 5000)), (False, True, True), strict=True):
        check_kd_impl("cpp", k, b, c, dtype=torch.float64, mode=mode, gate_on=True, weights_2d=True,
                      renormalize=renormalize, temperature=0.3)


@pytest.mark.parametrize("temperature", (0.25, 0.5, 1.0, 2.0, 4.0, 0.7, 3.0))
@pytest.mark.parametrize("mode", MODES)
def test_multi_teacher_kd_temperatures(mode, temperature):
    """tau in {1/4, 1/2, 1, 2, 4} derives one exponential from the other by squaring; other taus compute both."""
    for dtype in (torch.float32, torch.float64):
        check_kd_impl("cpp", 3, 5, 333, dtype=dtype, mode=mode, gate_on=True, weights_2d=True, renormalize=True,
                      temperature=temperature)


@pytest.mark.parametrize("capability", ("default", "avx2", "avx512"))
@pytest.mark.parametrize("mode", MODES)
def test_multi_teacher_kd_simd_paths(mode, capability, monkeypatch):
    """Each SIMD build of the kernel (chosen per call, capped by $COMPRESSOR_CPU_CAPABILITY; a CPU without the ISA
    runs its best lower path) on tails of every length and every input dtype."""
    monkeypatch.setenv("COMPRESSOR_CPU_CAPABILITY", capability)
    for i, c in enumerate((1, 15, 16, 17, 33, 100)):
        for dtype in (torch.float32, torch.bfloat16, torch.float16, torch.float64):
            check_kd_impl("cpp", 1 + i % 3, 3, c, dtype=dtype, mode=mode, gate_on=i % 2 == 1, weights_2d=True,
                          renormalize=i % 2 == 0, temperature=(0.5, 1.3)[i % 2], random_upstream=False)


@pytest.mark.parametrize("mode", MODES)
def test_multi_teacher_kd_raw_gradient(mode):
    """The op's 4th output (d loss[b] / d S[b, :], written in the forward) against the closed form, rounded once."""
    for dtype in (torch.float32, torch.bfloat16, torch.float16):
        for k, b, c in ((1, 3, 7), (2, 4, 1000), (5, 3, 100), (8, 2, 5000)):
            s, t, w = make_inputs(k, b, c, dtype=dtype, weights_2d=True)
            _, _, entropy_ref = reference.multi_teacher_kd(s, t, w, temperature=0.8, mode=mode)
            chi = gate_for(entropy_ref, True)
            loss, keep, entropy, raw = torch.ops.compressor.multi_teacher_kd(
                s, t, w, 0.8, chi, mode == "multilabel", True
            )
            assert raw.dtype == dtype and raw.shape == (b, c) and raw.is_contiguous()
            closed = reference.multi_teacher_kd_grad(
                s, t, w, temperature=0.8, gate_threshold=chi, mode=mode, renormalize=True
            )
            _, keep_ref, entropy_ref = reference.multi_teacher_kd(
                s, t, w, temperature=0.8, gate_threshold=chi, mode=mode
            )
            rows = comparable_rows(keep, keep_ref, entropy, entropy_ref, chi, dtype)
            atol, rtol = grad_tolerance(dtype, roundings=1)
            torch.testing.assert_close(raw[rows].float(), closed[rows].float(), atol=atol, rtol=rtol)


@pytest.mark.parametrize("mode", MODES)
def test_multi_teacher_kd_extreme_logits(mode):
    """Large logits and offsets (max-subtracted softmax, softplus forms): finite and equal to the reference."""
    check_kd_impl("cpp", 3, 4, 3000, mode=mode, gate_on=True, renormalize=True, temperature=0.7, scale=40.0)
    check_extreme_offsets("cpp", mode)


@pytest.mark.parametrize("renormalize", (False, True))
@pytest.mark.parametrize("mode", MODES)
def test_multi_teacher_kd_nothing_kept(mode, renormalize):
    """A gate that drops every teacher: loss exactly 0 and an exactly zero gradient (no 0/0 from renormalisation)."""
    s, t, w = make_inputs(5, 3, 300, weights_2d=True)
    s.requires_grad_(True)
    loss, keep, _ = ops.multi_teacher_kd(
        s, t, w, temperature=2.0, gate_threshold=0.0, mode=mode, renormalize=renormalize, impl="cpp"
    )
    assert not keep.any()
    assert torch.equal(loss, torch.zeros_like(loss))
    (grad,) = torch.autograd.grad(loss.sum(), s)
    assert torch.equal(grad, torch.zeros_like(grad))


def test_multi_teacher_kd_partly_gated_rows():
    """Rows with nothing kept next to rows with teachers kept: only the former are exactly zero."""
    k, b, c = 3, 6, 50
    s, t, w = make_inputs(k, b, c, weights_2d=True)
    t[:, :3] *= 0.01  # flat teachers (entropy ~ log C) in rows 0-2, confident ones in rows 3-5
    t[:, 3:] *= 100.0
    chi = math.log(c) - 0.1
    s.requires_grad_(True)
    loss, keep, _ = ops.multi_teacher_kd(s, t, w, temperature=1.0, gate_threshold=chi, renormalize=True, impl="cpp")
    assert not keep[:, :3].any() and keep[:, 3:].all()
    (grad,) = torch.autograd.grad(loss.sum(), s)
    assert torch.equal(loss[:3], torch.zeros(3)) and (loss[3:] > 0).all()
    assert torch.equal(grad[:3], torch.zeros(3, c)) and (grad[3:].abs().sum(1) > 0).all()
    # renormalised, every row's gradient sums to 0 over classes (p and q_k are distributions) and is tau * (p - q)
    torch.testing.assert_close(grad.sum(1), torch.zeros(b), atol=1e-5, rtol=0)


def test_multi_teacher_kd_analytic():
    """Known answers: identical student and teachers give KL 0 and a zero gradient; uniform logits give H = log C."""
    s = torch.randn(4, 9)
    t = s.expand(3, 4, 9).clone()
    loss, keep, entropy = ops.multi_teacher_kd(s, t, torch.ones(3), temperature=2.0, impl="cpp")
    torch.testing.assert_close(loss, torch.zeros(4), atol=1e-6, rtol=0)
    assert keep.all()
    flat = torch.zeros(2, 4, 9)
    _, _, entropy = ops.multi_teacher_kd(s, flat, torch.ones(2), temperature=1.0, impl="cpp")
    torch.testing.assert_close(entropy, torch.full((2, 4), math.log(9)))
    _, _, entropy = ops.multi_teacher_kd(s, flat, torch.ones(2), temperature=1.0, mode="multilabel", impl="cpp")
    torch.testing.assert_close(entropy, torch.full((2, 4), math.log(2)))
    *_, raw = torch.ops.compressor.multi_teacher_kd(s, t, torch.ones(3, 4), 2.0, math.inf, False, False)
    torch.testing.assert_close(raw, torch.zeros(4, 9), atol=1e-6, rtol=0)


def test_multi_teacher_kd_mixed_dtypes():
    """Student, teachers and weights in different dtypes: the reference's contract (compressor/reference.py)."""
    check_kd_mixed_dtypes("cpp")


def test_multi_teacher_kd_strided_weights():
    """The kernel reads weights through their strides: a transposed [K, B] view, and [K] weights (row stride 0)."""
    check_strided_weights()


@pytest.mark.parametrize("layout", ("rows", "lanes"))
@pytest.mark.parametrize("mode", MODES)
def test_multi_teacher_kd_both_layouts(mode, layout, monkeypatch):
    """The row loop and the rows-in-lanes layout (few classes), each forced on shapes the other serves by default:
    partial blocks of rows (B not a multiple of the vector width), every dtype."""
    monkeypatch.setenv("COMPRESSOR_KD_CPU_LAYOUT", layout)
    for i, (k, b, c) in enumerate(((1, 1, 1), (2, 17, 3), (5, 33, 64), (3, 7, 65), (4, 40, 300))):
        for dtype in (torch.float32, torch.bfloat16, torch.float16, torch.float64):
            check_kd_impl("cpp", k, b, c, dtype=dtype, mode=mode, gate_on=i % 2 == 0, weights_2d=i % 2 == 1,
                          renormalize=i % 3 == 0, temperature=(0.5, 1.0, 2.0, 0.7)[i % 4], random_upstream=False)


@pytest.mark.parametrize("mode", MODES)
def test_multi_teacher_kd_empty(mode):
    """B = 0 and C = 0 follow the reference (C = 0: KL 0; entropy 0 multiclass, NaN = not kept multilabel)."""
    for b, c in ((0, 5), (3, 0)):
        s, t, w = make_inputs(2, b, c)
        out = ops.multi_teacher_kd(s, t, w, temperature=1.5, mode=mode, impl="cpp")
        ref = reference.multi_teacher_kd(s, t, w, temperature=1.5, mode=mode)
        for got, want in zip(out, ref, strict=True):
            assert got.shape == want.shape and got.dtype == want.dtype
            torch.testing.assert_close(got, want, equal_nan=True)


@pytest.mark.parametrize("mode", MODES)
def test_gradcheck_float64(mode):
    """Finite differences in float64 against the analytic gradient: of the reference, and of the C++ op."""
    k, b, c = 3, 4, 6
    s, t, w = make_inputs(k, b, c, dtype=torch.float64, weights_2d=True)
    _, _, entropy = reference.multi_teacher_kd(s, t, w, temperature=0.7, mode=mode)
    chi = gate_for(entropy, True)
    kwargs = dict(temperature=0.7, gate_threshold=chi, mode=mode, renormalize=True)
    s.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda x: reference.multi_teacher_kd(x, t, w, **kwargs)[0], (s,))
    assert torch.autograd.gradcheck(lambda x: ops.multi_teacher_kd(x, t, w, impl="cpp", **kwargs)[0], (s,))
    kwargs.update(gate_threshold=math.inf, renormalize=False, temperature=2.0)
    assert torch.autograd.gradcheck(lambda x: ops.multi_teacher_kd(x, t, w[:, 0], impl="cpp", **kwargs)[0], (s,))


def test_direct_call_bad_arguments_raise():
    """torch.ops.compressor.multi_teacher_kd asserts its input form in C++ (RuntimeError, never a crash)."""
    op = torch.ops.compressor.multi_teacher_kd
    s, t, w = make_inputs(2, 3, 5, weights_2d=True)
    bad = [
        (s, t[:, :2], w),  # B mismatch
        (s[:, :4], t, w),  # C mismatch
        (s, t[:0], w[:0]),  # K = 0
        (s, t, w[:, :2]),  # weights shape
        (s[0], t, w),  # student not 2-D
        (s.to(torch.int32), t.to(torch.int32), w),  # integer logits
        (s, t, w.to(torch.int64)),  # integer weights
        (s, t, w.double()),  # weights not in the accumulation dtype
        (s, t.bfloat16(), w),  # two logit dtypes (compressor.ops converts them first)
        (s.t().contiguous().t(), t, w),  # non-contiguous student
    ]
    for args in bad:
        with pytest.raises(RuntimeError):
            op(*args, 1.0, math.inf, False, False)
    for tau in (0.0, -1.0, math.inf, math.nan):
        with pytest.raises(RuntimeError, match="temperature"):
            op(s, t, w, tau, math.inf, False, False)


# ---------------------------------------------------------------------------------------------------------------------
# average_weights_
# ---------------------------------------------------------------------------------------------------------------------


def _pairs(dtypes, shapes=((3, 4), (70_000,), (1,), (5, 1, 2))):
    """(averaged, current) lists: one tensor per (dtype, shape) combination, current differing from averaged."""
    averaged, current = [], []
    for i, dtype in enumerate(dtypes):
        shape = shapes[i % len(shapes)]
        if dtype.is_floating_point or dtype.is_complex:
            averaged.append(torch.randn(shape, dtype=dtype))
            current.append(torch.randn(shape, dtype=dtype))
        elif dtype == torch.bool:
            averaged.append(torch.rand(shape) > 0.5)
            current.append(torch.rand(shape) > 0.5)
        else:
            averaged.append(torch.randint(-100, 100, shape, dtype=dtype))
            current.append(torch.randint(-100, 100, shape, dtype=dtype))
    return averaged, current


def _clone(t):
    """A copy with the same strides (clone() would make a non-dense view contiguous)."""
    return torch.empty_strided(t.shape, t.stride(), dtype=t.dtype).copy_(t)


def _check_average(averaged, current, weight):
    want = [_clone(a) for a in averaged]
    reference.average_weights_(want, current, weight)
    got = [_clone(a) for a in averaged]
    ops.average_weights_(got, current, weight, impl="cpp")
    for g, r, a in zip(got, want, averaged, strict=True):
        assert g.dtype == a.dtype and g.shape == a.shape and g.stride() == a.stride()
        if g.dtype == torch.float64:  # the weight reaches float64 tensors unrounded: equal up to one ulp
            torch.testing.assert_close(g, r, atol=0.0, rtol=2 * torch.finfo(g.dtype).eps)
        elif g.dtype.is_floating_point:
            atol, rtol = TOLERANCES[g.dtype]
            # Same operations in the same order as the reference; allow one ulp for platforms that contract to FMA.
            torch.testing.assert_close(g, r, atol=atol, rtol=rtol + torch.finfo(g.dtype).eps)
        else:
            assert torch.equal(g, r)


@pytest.mark.parametrize("dtype", (torch.float32, torch.bfloat16, torch.float16, torch.float64, torch.int64), ids=str)
def test_average_weights_dtypes(dtype):
    for weight in (0.25, 1 / 3, torch.tensor(0.1), torch.tensor(0.7, dtype=torch.float64), 0.0, 1.0):
        _check_average(*_pairs([dtype] * 4), weight)


def test_average_weights_float8():
    check_average_float8("cpp")


def test_average_weights_mixed_list_and_edge_weights():
    dtypes = [torch.float32, torch.int64, torch.bfloat16, torch.float16, torch.float64, torch.bool, torch.int8,
              torch.float32]
    averaged, current = _pairs(dtypes)
    _check_average(averaged, current, torch.tensor(0.3))
    _check_average(averaged, current, 1.0)
    # weight 0 leaves every floating tensor exactly unchanged, and still copies the integer ones
    got = [a.clone() for a in averaged]
    ops.average_weights_(got, current, torch.tensor(0.0), impl="cpp")
    for g, a, c in zip(got, averaged, current, strict=True):
        assert torch.equal(g, a if g.dtype.is_floating_point else c)


def test_average_weights_complex():
    """Complex tensors are averaged through their real view: real and imaginary parts both move towards current."""
    a, c = torch.randn(5, 3, dtype=torch.complex64), torch.randn(5, 3, dtype=torch.complex64)
    got, want = [a.clone()], [a.clone()]
    ops.average_weights_(got, [c], 0.25, impl="cpp")
    reference.average_weights_(want, [c], 0.25)
    torch.testing.assert_close(got[0], a + (c - a) * 0.25)
    torch.testing.assert_close(got[0], want[0])


def test_average_weights_empty_and_zero_sized():
    ops.average_weights_([], [], 0.5, impl="cpp")
    torch.ops.compressor.average_weights_([], [], torch.tensor(0.5))
    a, c = [torch.empty(0), torch.ones(3)], [torch.empty(0), torch.zeros(3)]
    ops.average_weights_(a, c, 0.5, impl="cpp")
    assert torch.equal(a[1], torch.full((3,), 0.5))


def test_average_weights_strided():
    """Non-contiguous averaged tensors (strided fallback) and non-contiguous current tensors."""
    base_a, base_c = torch.randn(6, 8), torch.randn(8, 6)
    averaged = [base_a.t(), torch.randn(5, 7)[:, ::2], torch.randn(4, 4), torch.arange(10)[::2].clone()]
    current = [base_c, torch.randn(5, 4), torch.randn(4, 4).t(), torch.arange(20)[::4]]
    _check_average(averaged, current, 0.4)


def test_average_weights_running_mean():
    """weight = 1 / (n + 1) turns the averages into the arithmetic mean of all snapshots (RoS-KD Eq. 1)."""
    snapshots = [[torch.randn(300, 7), torch.randn(50, dtype=torch.float64)] for _ in range(9)]
    averaged = [t.clone() for t in snapshots[0]]
    for n, snap in enumerate(snapshots[1:], start=1):
        ops.average_weights_(averaged, snap, torch.tensor(1.0 / (n + 1)), impl="cpp")
    for i, a in enumerate(averaged):
        mean = torch.stack([s[i] for s in snapshots]).mean(0)
        torch.testing.assert_close(a, mean, atol=1e-5, rtol=1e-5)


def test_average_weights_in_place_and_bad_arguments():
    a, c = torch.zeros(4), torch.ones(4)
    ptr = a.data_ptr()
    ops.average_weights_([a], [c], 0.25, impl="cpp")
    assert a.data_ptr() == ptr and torch.equal(a, torch.full((4,), 0.25))
    op = torch.ops.compressor.average_weights_
    w = torch.tensor(0.5)
    for averaged, current in (([a], []), ([a], [torch.ones(5)]), ([a], [torch.ones(4, dtype=torch.float64)])):
        with pytest.raises(RuntimeError):
            op(averaged, current, w)
    with pytest.raises(RuntimeError):
        op([a], [c], torch.tensor([0.5, 0.5]))
    with pytest.raises((ValueError, TypeError)):
        ops.average_weights_([a], [torch.ones(5)], 0.5, impl="cpp")
