"""Triton kernel of the fused, entropy-gated, weighted multi-teacher KD loss (``compressor::multi_teacher_kd_triton``).

Contract: ``compressor/reference.py`` (``multi_teacher_kd`` and ``multi_teacher_kd_grad``). The op returns
``(loss[B], keep[K, B] bool, entropy[K, B], grad[B, C])``: ``loss``/``entropy`` in the accumulation dtype (float32,
float64 for float64 input) and ``grad = d loss[b] / d S[b, :]`` in the student's dtype, written during the forward
and scaled by the incoming gradient in the backward (``register_autograd`` below).

Kernel design (one program per row ``b``, grid ``(B,)``):

* The ``K`` teacher rows of ``b`` are read together as one ``[KP, BLOCK_C]`` tile, ``KP = next_power_of_2(K)``
  (padded rows masked). Every per-teacher statistic is then a ``[KP]`` vector produced by an ``axis=1`` reduction of
  the tile: Triton has no per-thread indexable arrays, and a Python loop over teachers would have to scatter into such
  vectors with ``tl.where`` per teacher; the tile form has no loop at all and keeps all teachers' loads in flight at
  once. ``K`` itself is a runtime argument (masking), so K = 5..8 share one compiled kernel.
* Sweep 1 streams the row once over ``C`` in ``BLOCK_C`` chunks, with online (running-max, rescaled) sums:

  - multiclass, with ``x = t / tau``, ``y = s / tau``, running maxima ``m_k`` (teachers) and ``m_s`` (student):
    ``z_k = sum exp(x - m_k)``, ``d_k = sum exp(x - m_k) * ((x - m_k) - (y - m_s))``, ``z_s = sum exp(y - m_s)``;
    then ``KL_k = d_k / z_k - log z_k + log z_s``. This is ``sum_c q_kc (t_kc - s_c) / tau - LSE(t_k / tau) +
    LSE(s / tau)`` written with centred logits, so no large terms cancel. Entropy at temperature 1 from
    ``z1_k = sum exp(t - m1_k)``, ``h_k = sum exp(t - m1_k) (t - m1_k)``, ``H_k = log z1_k - h_k / z1_k``
    (``m1_k`` the running max of ``t``). When ``tau == 1`` the tempered sums serve the entropy too (one exponential
    per element instead of two). Each chunk's statistics are taken relative to the chunk's own maxima and merged
    into the running state (the first chunk initialises it), so no ``-inf`` ever enters the arithmetic.
  - multilabel, per element (no running state): with ``L(v) = log(1 + exp(-|v|))`` (softplus(v) = relu(v) + L(v)),
    ``KL_c = L(y) - L(x) + q (relu(-y) - relu(-x)) + (1 - q)(relu(y) - relu(x))``, ``q = sigmoid(x)`` and
    ``1 - q`` computed from ``exp(-|x|)`` without cancellation; entropy ``L(t) + r relu(-t) + (1 - r) relu(t)``,
    ``r = sigmoid(t)``, averaged over C.
* Gate and weights in registers: ``keep = H < chi``, ``w' = w * keep`` (renormalised per row when asked; nothing
  kept gives loss 0 and a zero gradient), ``loss = tau^2 sum_k w'_k KL_k``.
* Sweep 2 re-reads the row and writes ``grad = tau (W p - sum_k w'_k q_k)``, ``W = sum_k w'_k``, in S's dtype. It runs
  from the last chunk to the first, so it starts on the chunks sweep 1 read last (the ones most likely still in L2),
  and teachers whose gated weight is 0 are masked out of its loads (no bytes read for them).

Bytes per row (``e`` bytes per element): sweep 1 reads ``(K + 1) C e``, sweep 2 reads ``(K_kept + 1) C e`` and writes
``C e``: about ``(2K + 3) C e`` in all, against ``(3K + 4) C e`` for a max / sum / gradient three-pass scheme. No
``[K, B, C]`` intermediate exists and nothing synchronises with the host. ``tau`` and ``chi`` travel as fp32 kernel
arguments split into a (high, low) pair, so the float64 path sees them to ~48 bits.

Compute (multiclass): sweep 1 takes two exponentials per teacher element (one when ``tau == 1``) and one per student
element, sweep 2 one per element. At K = 4 in bf16 that is ~14 ``ex2`` per column against ~22 bytes moved per column,
so on H100 the SFU time is estimated to be of the same order as the HBM time: an estimate, not a measurement.
"""

from __future__ import annotations

import math
import struct

import torch
import triton
import triton.language as tl
from torch import Tensor
from torch.library import triton_op, wrap_triton

from compressor import kd_autograd, ops
from compressor._ext import triton_interpreted

from ._opaque import keep_opaque_under_functionalization
from ._rounding import cast_rne


@triton.jit
def _softmax_chunk_stats(s_row, t_rows, cols, C, k_ok, tau, inv_tau, TAU_IS_ONE: tl.constexpr):
    """Softmax statistics of one chunk of a row, each relative to the chunk's own maxima.

    Returns ``(m, z, d, m1, z1, h1, ms, zs)``: per teacher (``[KP]``) the maximum ``m`` of ``x = t / tau``,
    ``z = sum exp(x - m)``, ``d = sum exp(x - m) ((x - m) - (y - ms))``, the temperature-1 reference point
    ``m1 = max t``, ``z1 = sum exp(t - m1)``, ``h1 = sum exp(t - m1) (t - m1)``; for the student the maximum ``ms`` of
    ``y = s / tau`` and ``zs = sum exp(y - ms)``. Every chunk holds at least one column, so all of them are finite.
    """
    acc = inv_tau.dtype
    c_ok = cols < C
    y = tl.load(s_row + cols, mask=c_ok, other=0.0).to(acc) * inv_tau
    t = tl.load(t_rows[:, None] + cols[None, :], mask=k_ok[:, None] & c_ok[None, :], other=0.0).to(acc)
    x = t * inv_tau
    # Masked columns are sent to exp(-inf) = 0 (their values are arbitrary and could overflow exp otherwise).
    ms = tl.max(tl.where(c_ok, y, float("-inf")), axis=0)
    yc = y - ms
    zs = tl.sum(tl.exp(tl.where(c_ok, yc, float("-inf"))), axis=0)
    # Padded teacher rows hold zeros: finite statistics, dropped by the caller.
    m = tl.max(tl.where(c_ok[None, :], x, float("-inf")), axis=1)
    xc = x - m[:, None]
    e = tl.exp(tl.where(c_ok[None, :], xc, float("-inf")))
    z = tl.sum(e, axis=1)
    d = tl.sum(e * (xc - yc[None, :]), axis=1)
    if TAU_IS_ONE:  # x == t: the tempered sums are the temperature-1 sums (one exponential per element)
        m1 = m
        z1 = z
        h1 = tl.sum(e * xc, axis=1)
    else:
        m1 = tl.max(tl.where(c_ok[None, :], t, float("-inf")), axis=1)
        tc = t - m1[:, None]
        e1 = tl.exp(tl.where(c_ok[None, :], tc, float("-inf")))
        z1 = tl.sum(e1, axis=1)
        h1 = tl.sum(e1 * tc, axis=1)
    return m, z, d, m1, z1, h1, ms, zs


@triton.jit
def _multi_teacher_kd_kernel(
    S,  # [B, C] student logits
    T,  # [K, B, C] teacher logits
    W,  # weights w[k, b] = W[k * W_SK + b * W_SB] ([K] weights: W_SB = 0), accumulation dtype (every sum's dtype)
    LOSS,  # [B] out
    KEEP,  # [K, B] out, bool
    ENT,  # [K, B] out
    GRAD,  # [B, C] out, S's dtype
    B,
    C,
    K,
    W_SK,
    W_SB,
    tau_hi,
    tau_lo,
    chi_hi,
    chi_lo,
    MULTILABEL: tl.constexpr,
    RENORMALIZE: tl.constexpr,
    TAU_IS_ONE: tl.constexpr,
    KP: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    acc = W.dtype.element_ty
    row = tl.program_id(0).to(tl.int64)
    # tl.full casts a runtime fp32 scalar (compiled) or a Python float (interpreter) alike.
    tau = tl.full([], tau_hi, acc) + tl.full([], tau_lo, acc)
    chi = tl.full([], chi_hi, acc) + tl.full([], chi_lo, acc)
    inv_tau = 1.0 / tau

    ks = tl.arange(0, KP)
    k_ok = ks < K
    s_row = S + row * C
    g_row = GRAD + row * C
    t_rows = T + (ks.to(tl.int64) * B + row) * C  # [KP] row pointers
    cols0 = tl.arange(0, BLOCK_C)

    # ---- sweep 1: statistics of the row --------------------------------------------------------------------------
    if MULTILABEL:
        kl = tl.zeros([KP], dtype=acc)
        hsum = tl.zeros([KP], dtype=acc)
        for c0 in range(0, C, BLOCK_C):
            cols = c0 + cols0
            c_ok = cols < C
            y = tl.load(s_row + cols, mask=c_ok, other=0.0).to(acc) * inv_tau
            t = tl.load(t_rows[:, None] + cols[None, :], mask=k_ok[:, None] & c_ok[None, :], other=0.0).to(acc)
            x = t * inv_tau
            ly = tl.log(1.0 + tl.exp(-tl.abs(y)))
            ex = tl.exp(-tl.abs(x))
            lx = tl.log(1.0 + ex)
            rcp = 1.0 / (1.0 + ex)
            q1 = tl.where(x >= 0, rcp, ex * rcp)  # sigmoid(x)
            q0 = tl.where(x >= 0, ex * rcp, rcp)  # 1 - sigmoid(x), without cancellation
            klc = (
                (ly[None, :] - lx)
                + q1 * (tl.maximum(-y, 0.0)[None, :] - tl.maximum(-x, 0.0))
                + q0 * (tl.maximum(y, 0.0)[None, :] - tl.maximum(x, 0.0))
            )
            kl += tl.sum(tl.where(c_ok[None, :], klc, 0.0), axis=1)
            if TAU_IS_ONE:
                hc = lx + q1 * tl.maximum(-x, 0.0) + q0 * tl.maximum(x, 0.0)
            else:
                et = tl.exp(-tl.abs(t))
                rt = 1.0 / (1.0 + et)
                r1 = tl.where(t >= 0, rt, et * rt)
                r0 = tl.where(t >= 0, et * rt, rt)
                hc = tl.log(1.0 + et) + r1 * tl.maximum(-t, 0.0) + r0 * tl.maximum(t, 0.0)
            hsum += tl.sum(tl.where(c_ok[None, :], hc, 0.0), axis=1)
        entropy = hsum / C
    else:
        # The first chunk initialises the running state, every further chunk is merged into it: no -inf arithmetic.
        m, z, d, m1, z1, h1, ms, zs = _softmax_chunk_stats(s_row, t_rows, cols0, C, k_ok, tau, inv_tau, TAU_IS_ONE)
        for c0 in range(BLOCK_C, C, BLOCK_C):
            mb, zb, db, m1b, z1b, h1b, msb, zsb = _softmax_chunk_stats(
                s_row, t_rows, c0 + cols0, C, k_ok, tau, inv_tau, TAU_IS_ONE
            )
            # Rescale both partial sums to the common maxima; d also moves with the student's maximum.
            ms_n = tl.maximum(ms, msb)
            m_n = tl.maximum(m, mb)
            a = tl.exp(m - m_n)
            b = tl.exp(mb - m_n)
            d = a * (d + ((m - m_n) - (ms - ms_n)) * z) + b * (db + ((mb - m_n) - (msb - ms_n)) * zb)
            z = a * z + b * zb
            zs = zs * tl.exp(ms - ms_n) + zsb * tl.exp(msb - ms_n)
            m1_n = tl.maximum(m1, m1b)
            a1 = tl.exp(m1 - m1_n)
            b1 = tl.exp(m1b - m1_n)
            h1 = a1 * (h1 + (m1 - m1_n) * z1) + b1 * (h1b + (m1b - m1_n) * z1b)
            z1 = a1 * z1 + b1 * z1b
            m = m_n
            ms = ms_n
            m1 = m1_n
        log_zs = tl.log(zs)
        kl = d / z - tl.log(z) + log_zs
        entropy = tl.log(z1) - h1 / z1

    # ---- gate and weights ----------------------------------------------------------------------------------------
    w = tl.load(W + ks.to(tl.int64) * W_SK + row * W_SB, mask=k_ok, other=0.0).to(acc)
    keep = (entropy < chi) & k_ok
    wg = tl.where(keep, w, 0.0)
    if RENORMALIZE:
        total = tl.sum(wg, axis=0)
        wg = tl.where(total > 0, wg / tl.where(total > 0, total, 1.0), 0.0)
    wsum = tl.sum(wg, axis=0)
    loss = tau * tau * tl.sum(tl.where(keep, wg * kl, 0.0), axis=0)
    tl.store(LOSS + row, loss)
    tl.store(ENT + ks.to(tl.int64) * B + row, entropy, mask=k_ok)
    tl.store(KEEP + ks.to(tl.int64) * B + row, keep, mask=k_ok)

    # ---- sweep 2: gradient tau (W p - sum_k w'_k q_k), last chunk first ------------------------------------------
    k_read = k_ok & (wg != 0)  # teachers with zero gated weight cost no bytes
    n_chunks = (C + BLOCK_C - 1) // BLOCK_C
    if not MULTILABEL:
        coef = wg / z  # w'_k / z_k: q_kc = exp(x_kc - m_k) / z_k
        inv_zs = 1.0 / zs
    for i in range(0, n_chunks):
        cols = (n_chunks - 1 - i) * BLOCK_C + cols0
        c_ok = cols < C
        y = tl.load(s_row + cols, mask=c_ok, other=0.0).to(acc) * inv_tau
        tmask = k_read[:, None] & c_ok[None, :]
        x = tl.load(t_rows[:, None] + cols[None, :], mask=tmask, other=0.0).to(acc) * inv_tau
        if MULTILABEL:
            ey = tl.exp(-tl.abs(y))
            p = tl.where(y >= 0, 1.0, ey) / (1.0 + ey)
            ex = tl.exp(-tl.abs(x))
            q = tl.where(x >= 0, 1.0, ex) / (1.0 + ex)
            qsum = tl.sum(tl.where(tmask, wg[:, None] * q, 0.0), axis=0)
        else:
            p = tl.exp(tl.where(c_ok, y - ms, float("-inf"))) * inv_zs
            qsum = tl.sum(coef[:, None] * tl.exp(tl.where(tmask, x - m[:, None], float("-inf"))), axis=0)
        grad = tau * (wsum * p - qsum)
        tl.store(g_row + cols, cast_rne(grad, GRAD.dtype.element_ty), mask=c_ok)


def _split_fp32(value: float) -> tuple[float, float]:
    """``value`` as two fp32 numbers ``(hi, lo)`` with ``hi + lo ~= value`` to ~48 bits (kernel scalars are fp32)."""
    if math.isnan(value):
        return value, 0.0
    if abs(value) > torch.finfo(torch.float32).max:
        return math.copysign(math.inf, value), 0.0
    hi = struct.unpack("f", struct.pack("f", value))[0]  # finite: |value| <= the largest fp32
    return hi, struct.unpack("f", struct.pack("f", value - hi))[0]


def launch_config(c: int, k: int, dtype: torch.dtype, interpreted: bool = False) -> tuple[int, int, int]:
    """``(KP, BLOCK_C, num_warps)`` for ``C`` classes, ``K`` teachers and input ``dtype``.

    The ``[KP, BLOCK_C]`` tile holds about 4096 fp32 values (16 per thread at 8 warps) or 2048 fp64 values (8 per
    thread): large enough to keep several vectorised loads per thread in flight, small enough to stay in registers
    (sm_90 ptxas: 116 registers, no spills, for bf16 with K = 4). ``BLOCK_C`` never exceeds the row
    (``next_power_of_2(C)``, at least 16), and the warp count shrinks with the tile.

    ``interpreted`` (``TRITON_INTERPRET=1``): every Triton operation then costs a fixed Python overhead that dwarfs
    its NumPy work, so the tile is 4x larger (fewer loop steps, same code; rows of a few thousand classes still take
    several chunks). Deterministic, no autotuning in either mode.
    """
    kp = triton.next_power_of_2(k)
    wide = dtype == torch.float64
    tile, per_thread = (2048, 8) if wide else (4096, 16)
    if interpreted:
        tile *= 4
    block_c = min(max(triton.next_power_of_2(c), 16), max(tile // kp, 16))
    num_warps = min(max((kp * block_c) // (32 * per_thread), 1), 8)
    return kp, block_c, num_warps


@triton_op("compressor::multi_teacher_kd_triton", mutates_args=())
def multi_teacher_kd_triton(
    student: Tensor,
    teacher: Tensor,
    weights: Tensor,
    temperature: float,
    gate_threshold: float,
    multilabel: bool,
    renormalize: bool,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Fused multi-teacher KD forward; see the module docstring and ``compressor/reference.py``.

    Args:
        student: ``[B, C]`` contiguous logits (fp32, bf16, fp16 or fp64).
        teacher: ``[K, B, C]`` contiguous logits of the same dtype.
        weights: ``[K]`` or ``[K, B]`` weights (any strides) in the accumulation dtype (float32, float64 for float64
            logits).
            ``compressor.ops.multi_teacher_kd`` brings any valid arguments to this form; here it is only asserted
            (``compressor.ops.check_kernel_inputs``, ``RuntimeError``).
        temperature: ``tau > 0``.
        gate_threshold: ``chi``; teacher row kept when its entropy is below it.
        multilabel: Bernoulli (sigmoid) mode instead of softmax.
        renormalize: divide the gated weights by their per-row sum.

    Returns:
        ``(loss[B], keep[K, B] bool, entropy[K, B], grad[B, C])``; grad is ``d loss[b] / d student[b, :]``.
    """
    ops.check_kernel_inputs(student, teacher, weights, temperature, "multi_teacher_kd_triton")
    k, b, c = teacher.shape
    loss, keep, entropy, grad = ops.empty_kd_outputs(student, teacher)
    if b == 0:
        return loss, keep, entropy, grad
    if c == 0:
        # Empty rows: every KL is 0; the entropy is an empty sum (multiclass, 0) or an empty mean (multilabel, NaN).
        entropy.fill_(math.nan if multilabel else 0.0)
        keep.copy_(entropy < gate_threshold)
        loss.zero_()
        return loss, keep, entropy, grad
    tau = float(temperature)
    kp, block_c, num_warps = launch_config(c, k, student.dtype, triton_interpreted())
    tau_hi, tau_lo = _split_fp32(tau)
    chi_hi, chi_lo = _split_fp32(float(gate_threshold))
    wrap_triton(_multi_teacher_kd_kernel)[(b,)](
        student,
        teacher,
        weights,
        loss,
        keep,
        entropy,
        grad,
        b,
        c,
        k,
        weights.stride(0),
        weights.stride(1) if weights.dim() == 2 else 0,
        tau_hi,
        tau_lo,
        chi_hi,
        chi_lo,
        MULTILABEL=bool(multilabel),
        RENORMALIZE=bool(renormalize),
        TAU_IS_ONE=tau == 1.0,
        KP=kp,
        BLOCK_C=block_c,
        num_warps=num_warps,
    )
    return loss, keep, entropy, grad


@multi_teacher_kd_triton.register_fake
def _(student, teacher, weights, temperature, gate_threshold, multilabel, renormalize):
    # Explicit, rather than triton_op's default of running the function: under TRITON_INTERPRET=1, wrap_triton hands
    # back the interpreted kernel itself, which cannot run on fake tensors.
    ops.check_kernel_inputs(student, teacher, weights, temperature, "multi_teacher_kd_triton")
    return ops.empty_kd_outputs(student, teacher)


# Under TRITON_INTERPRET=1 keep the op whole in torch.compile graphs: interpreted kernels cannot be traced into a
# kernel-launch node, so the op then stays an opaque node that runs eagerly.
if triton_interpreted():
    keep_opaque_under_functionalization(multi_teacher_kd_triton)


multi_teacher_kd_triton.register_autograd(kd_autograd.backward, setup_context=kd_autograd.setup_context)
