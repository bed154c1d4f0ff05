"""Shared cases for the fused-op tests: shapes, random inputs and dtype tolerances.

Every implementation is compared against ``compressor.reference`` on fresh random inputs built here.
"""

from __future__ import annotations

import contextlib
import itertools
import math

import torch

KS = (1, 2, 5, 8)
CS = (1, 2, 7, 100, 1000, 5000)
BS = (3, 8)  # odd and even row counts
MODES = ("multiclass", "multilabel")

# (atol, rtol) per input dtype, applied to loss, entropy and gradient. Low-precision inputs are upcast to fp32
# inside the kernels, so the residual error comes from reading rounded inputs identically: tolerances stay tight.
TOLERANCES = {
    torch.float64: (1e-10, 1e-8),
    torch.float32: (2e-5, 2e-4),
    torch.bfloat16: (2e-3, 2e-3),
    torch.float16: (1e-3, 1e-3),
}


def shape_cases() -> list[tuple[int, int, int]]:
    """(K, B, C) covering every K and C, each with an odd and an even B across the list."""
    cases = []
    for i, (k, c) in enumerate(itertools.product(KS, CS)):
        cases.append((k, BS[i % 2], c))
    return cases


def option_cases() -> list[tuple[str, bool, bool, bool]]:
    """(mode, gate_on, weights_2d, renormalize): every combination."""
    return list(itertools.product(MODES, (False, True), (False, True), (False, True)))


def make_inputs(
    k: int,
    b: int,
    c: int,
    *,
    dtype: torch.dtype = torch.float32,
    weights_2d: bool = False,
    device: str | torch.device = "cpu",
    seed: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random (student[B,C], teachers[K,B,C], weights[K] or [K,B]) with varied logit scales per teacher row.

    A fresh seed is drawn when ``seed`` is None, so every test run sees new inputs.
    """
    gen = torch.Generator().manual_seed(seed if seed is not None else torch.seed() % (2**31))
    student = torch.randn(b, c, generator=gen) * 2.0
    # Per-row scales spread teacher entropies from confident (large scale) to flat (small scale).
    scales = torch.rand(k, b, 1, generator=gen) * 6.0 + 0.1
    teachers = torch.randn(k, b, c, generator=gen) * scales
    weights = torch.rand(k, b, generator=gen) if weights_2d else torch.rand(k, generator=gen)
    weights = weights + 0.05
    return (
        student.to(device=device, dtype=dtype),
        teachers.to(device=device, dtype=dtype),
        weights.to(device=device, dtype=torch.float32 if dtype != torch.float64 else torch.float64),
    )


def gate_for(entropy: torch.Tensor, gate_on: bool) -> float:
    """A gate threshold that keeps roughly half of the teacher rows (``inf`` when the gate is off).

    The threshold sits midway between two neighbouring sorted entropies, so rounding cannot flip a keep decision.
    """
    if not gate_on:
        return math.inf
    values = entropy.flatten().double().sort().values
    if values.numel() < 2:
        return float(values[0]) + 1e-3
    mid = values.numel() // 2
    return float((values[mid - 1] + values[mid]) / 2)


def grad_tolerance(dtype: torch.dtype, roundings: int = 3) -> tuple[float, float]:
    """(atol, rtol) for a gradient that ends up in the input ``dtype``: ``TOLERANCES`` plus the output roundings.

    ``TOLERANCES`` covers computing from identically rounded inputs; a gradient returned in S's dtype is also
    rounded on the way out, each rounding moving it by up to half an ulp (``eps / 2`` relative). A fused op that
    writes the per-row gradient in S's dtype during the forward and scales it in the backward rounds twice, the
    reference's autograd once: ``roundings=3`` compares those two, ``roundings=1`` compares a rounded gradient with
    an exact one. For bfloat16 one ulp is up to 0.8 % of the value, far above ``TOLERANCES``'s 2e-3.
    """
    atol, rtol = TOLERANCES[dtype]
    return atol, rtol + roundings * torch.finfo(dtype).eps / 2


def comparable_rows(
    keep: torch.Tensor,
    keep_ref: torch.Tensor,
    entropy: torch.Tensor,
    entropy_ref: torch.Tensor,
    chi: float,
    dtype: torch.dtype,
) -> torch.Tensor:
    """Rows ``[B]`` whose loss and gradient can be compared with the reference's; asserts every gate flip is explained.

    ``keep = H < chi`` is discontinuous: when the kernel's and the reference's entropies (computed in different
    orders) straddle ``chi`` within the entropy tolerance, the two may legitimately decide differently, and that row's
    loss and gradient then differ by a whole teacher's term. Such a flip is accepted only when one of the two
    entropies lies within tolerance of ``chi``, and its row is left out of the loss and gradient comparisons; a flip
    away from the threshold fails. (``gate_for`` puts ``chi`` midway between two sorted entropies, so flips are rare.)
    """
    flipped = keep != keep_ref
    if bool(flipped.any()):
        atol, rtol = TOLERANCES[dtype]
        tol = atol + rtol * abs(chi)
        near = ((entropy_ref.double() - chi).abs() <= tol) | ((entropy.double() - chi).abs() <= tol)
        assert bool(near[flipped].all()), f"gate decisions differ away from the threshold chi={chi}"
    return ~flipped.any(0)


def check_kd_impl(
    impl: str,
    k: int,
    b: int,
    c: int,
    *,
    dtype: torch.dtype = torch.float32,
    mode: str = "multiclass",
    gate_on: bool = False,
    weights_2d: bool = False,
    renormalize: bool = False,
    temperature: float = 0.5,
    device: str | torch.device = "cpu",
    random_upstream: bool = True,
    scale: float = 1.0,
    teacher_dtype: torch.dtype | None = None,
    weight_dtype: torch.dtype | None = None,
) -> None:
    """Compare ``compressor.ops.multi_teacher_kd(impl=impl)`` with the reference on fresh random inputs.

    Checks output dtypes / shapes, entropy, keep (see ``comparable_rows``), loss, and the gradient w.r.t. the student
    from ``loss.sum().backward()`` and, when ``random_upstream``, from a random per-row upstream gradient (the backward
    must scale each row). Gradients use ``grad_tolerance(dtype, 3)``: the fused op rounds the row gradient to the
    student's dtype in the forward and again after scaling, the reference's autograd once. ``scale`` multiplies all
    logits (numerical-stability cases). ``dtype`` is the student's; ``teacher_dtype`` and ``weight_dtype`` (default:
    the student's dtype and its accumulation dtype) give mixed-dtype cases, whose loss and entropy are computed from
    exactly read inputs in the accumulation dtype, so they take its tolerance.
    """
    from compressor import ops, reference

    s, t, w = make_inputs(k, b, c, dtype=dtype, weights_2d=weights_2d, device=device)
    if scale != 1.0:
        s, t = (s.float() * scale).to(dtype), (t.float() * scale).to(dtype)
    t = t.to(teacher_dtype or dtype)
    w = w.to(weight_dtype or w.dtype)
    _, _, entropy0 = reference.multi_teacher_kd(s, t, w, temperature=temperature, mode=mode)
    chi = gate_for(entropy0, gate_on)
    kwargs = dict(temperature=temperature, gate_threshold=chi, mode=mode, renormalize=renormalize)
    case = (
        f"impl={impl} K={k} B={b} C={c} {dtype} teachers {t.dtype} weights {w.dtype} {mode} gate={gate_on} "
        f"w2d={weights_2d} renorm={renormalize} tau={temperature} scale={scale}"
    )
    acc = reference.accumulation_dtype(dtype)
    atol, rtol = TOLERANCES[dtype if t.dtype == dtype else acc]
    g_atol, g_rtol = grad_tolerance(dtype, roundings=3)
    upstreams = [torch.ones(b, dtype=acc, device=device)]
    if random_upstream:
        upstreams.append(torch.rand(b, dtype=acc, device=device) * 4 - 2)
    for upstream in upstreams:
        s_op = s.clone().requires_grad_(True)
        s_ref = s.clone().requires_grad_(True)
        loss, keep, entropy = ops.multi_teacher_kd(s_op, t, w, impl=impl, **kwargs)
        loss_ref, keep_ref, entropy_ref = reference.multi_teacher_kd(s_ref, t, w, **kwargs)
        assert loss.dtype == acc and entropy.dtype == acc and keep.dtype == torch.bool, case
        assert loss.shape == (b,) and keep.shape == (k, b) and entropy.shape == (k, b), case
        assert loss.device == s.device and not entropy.requires_grad, case
        torch.testing.assert_close(entropy, entropy_ref, atol=atol, rtol=rtol, msg=lambda m: f"entropy {case}: {m}")
        rows = comparable_rows(keep, keep_ref, entropy, entropy_ref, chi, dtype)
        torch.testing.assert_close(loss[rows], loss_ref[rows], atol=atol, rtol=rtol, msg=lambda m: f"loss {case}: {m}")
        (loss * upstream).sum().backward()
        (loss_ref * upstream).sum().backward()
        assert s_op.grad.dtype == dtype and s_op.grad.shape == s.shape, case
        torch.testing.assert_close(
            s_op.grad[rows], s_ref.grad[rows], atol=g_atol, rtol=g_rtol, msg=lambda m: f"grad {case}: {m}"
        )


# (student, teachers, weights) dtype combinations of the mixed-dtype tests: every pair of float32, bfloat16 and float16
# logits, each with weights in a third dtype or the accumulation dtype, and float64 beside float32 both ways.
MIXED_DTYPES = [
    (s, t, w)
    for s in (torch.float32, torch.bfloat16, torch.float16)
    for t in (torch.float32, torch.bfloat16, torch.float16)
    for w in ((torch.float16,) if s == t else (torch.bfloat16, torch.float32))
] + [(torch.float64, torch.float32, torch.float32), (torch.float32, torch.float64, torch.float64)]


def check_kd_mixed_dtypes(impl: str, *, device: str | torch.device = "cpu") -> None:
    """``check_kd_impl`` on every combination of ``MIXED_DTYPES``, both modes, [K] and [K, B] weights, odd shapes."""
    for i, (s_dtype, t_dtype, w_dtype) in enumerate(MIXED_DTYPES):
        for mode in MODES:
            check_kd_impl(impl, 1 + i % 4, 3 + i % 2, (7, 100, 33)[i % 3], dtype=s_dtype, teacher_dtype=t_dtype,
                          weight_dtype=w_dtype, mode=mode, gate_on=i % 2 == 0, weights_2d=i % 3 == 0,
                          renormalize=i % 2 == 1, temperature=(0.5, 1.0, 1.7)[i % 3], device=device)


def check_strided_weights(*, device: str | torch.device = "cpu") -> None:
    """The registered kernel reads weights through their strides: a transposed [K, B] view and [K] weights (row
    stride 0) give bit for bit what their contiguous [K, B] copies give."""
    s, t, w = make_inputs(3, 19, 40, weights_2d=True, device=device)
    op = torch.ops.compressor.multi_teacher_kd
    want = op(s, t, w, 0.8, 2.0, False, True)
    for got, ref in zip(op(s, t, w.t().contiguous().t(), 0.8, 2.0, False, True), want, strict=True):
        torch.testing.assert_close(got, ref, rtol=0, atol=0)
    rows = op(s, t, w[:, :1].expand(3, 19).contiguous(), 0.8, 2.0, True, False)
    for got, ref in zip(op(s, t, w[:, 0], 0.8, 2.0, True, False), rows, strict=True):
        torch.testing.assert_close(got, ref, rtol=0, atol=0)


def check_extreme_offsets(impl: str, mode: str, *, device: str | torch.device = "cpu") -> None:
    """Large common offsets on confident, very confident and almost flat teachers: finite, equal to the reference.

    Catches online statistics that lose precision to cancellation (sums of ``p * x`` with ``|x|`` in the hundreds).
    """
    from compressor import ops, reference

    s, t, w = make_inputs(3, 4, 3000, device=device)
    t = t * torch.tensor([1.0, 30.0, 0.01], device=device)[:, None, None]
    for offset in (0.0, 500.0, -500.0):
        kwargs = dict(temperature=0.7, mode=mode, renormalize=True)
        loss, keep, entropy = ops.multi_teacher_kd(s + offset, t + offset, w, impl=impl, **kwargs)
        loss_ref, keep_ref, entropy_ref = reference.multi_teacher_kd(s + offset, t + offset, w, **kwargs)
        case = f"impl={impl} mode={mode} offset={offset}"
        assert torch.isfinite(loss).all() and torch.isfinite(entropy).all(), case
        torch.testing.assert_close(
            entropy, entropy_ref, atol=1e-4, rtol=1e-4, msg=lambda m, case=case: f"entropy {case}: {m}"
        )
        torch.testing.assert_close(loss, loss_ref, atol=1e-3, rtol=1e-4, msg=lambda m, case=case: f"loss {case}: {m}")
        assert torch.equal(keep, keep_ref), case


def check_average_float8(impl: str, *, device: str | torch.device = "cpu") -> None:
    """float8 tensors (no kernel path) are averaged as the reference does, not copied, next to a float32 tensor."""
    from compressor import ops, reference

    for dtype in (torch.float8_e4m3fn, torch.float8_e5m2):
        averaged = [torch.rand(7, 3, device=device).to(dtype), torch.rand(5, device=device)]
        current = [torch.rand(7, 3, device=device).to(dtype), torch.rand(5, device=device)]
        want = [a.clone() for a in averaged]
        reference.average_weights_(want, current, 0.3)
        assert not torch.equal(want[0].float(), current[0].float())  # a copy would not pass this test
        ops.average_weights_(averaged, current, 0.3, impl=impl)
        assert averaged[0].dtype == dtype
        assert torch.equal(averaged[0].float(), want[0].float()), f"impl={impl} {dtype}"
        torch.testing.assert_close(averaged[1], want[1])


@contextlib.contextmanager
def no_host_sync(device: str | torch.device):
    """On CUDA, turn any host synchronisation inside the block into an error; a no-op on other devices."""
    if torch.device(device).type != "cuda":
        yield
        return
    previous = torch.cuda.get_sync_debug_mode()
    torch.cuda.set_sync_debug_mode("error")
    try:
        yield
    finally:
        torch.cuda.set_sync_debug_mode(previous)
