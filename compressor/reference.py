"""Pure-PyTorch reference of the two fused ops: the executable form of their contract.

Every fast implementation (C++ CPU, CUDA, Triton) is tested against these functions. They favour
clarity over speed: the reference materialises ``[K, B, C]`` intermediates, the fused kernels never do.

Contract (DESIGN.md, "The two fused ops"):

``multi_teacher_kd(S[B,C], T[K,B,C], w[K] | w[K,B], tau, chi, mode, renormalize)``

* multiclass: ``q_k = softmax(T_k / tau)``, ``p = softmax(S / tau)``,
  ``KL(q_k || p) = sum_c q_kc (log q_kc - log p_c)``, gate entropy ``H = -sum_c r_c log r_c``, ``r = softmax(T_k)``.
* multilabel: ``q_k = sigmoid(T_k / tau)``, ``p = sigmoid(S / tau)``, KL is the sum over classes of the Bernoulli
  KLs, gate entropy is the mean over classes of the binary entropy of ``sigmoid(T_k)``.
* ``keep[k,b] = H[k,b] < chi``; ``w' = w * keep``, divided by ``sum_k w'`` per row when ``renormalize``
  (a row with nothing kept has loss 0).
* ``loss[b] = tau^2 * sum_k w'[k,b] * KL(q_k[b] || p[b])``.
* Gradient (both modes): ``dloss[b]/dS[b,c] = tau * sum_k w'[k,b] * (p[b,c] - q_k[b,c])``; teachers and weights
  receive no gradient.

``average_weights_(averaged, current, weight)``: ``avg += (cur - avg) * weight`` in place for every floating pair,
integer tensors copied.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

MODES = ("multiclass", "multilabel")


def accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype the ops compute and return their float outputs in: float64 for float64 inputs, else float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def check_kd_arguments(
    student_logits: Tensor,
    teacher_logits: Tensor,
    weights: Tensor,
    temperature: float,
    mode: str,
) -> None:
    """Validate the arguments of ``multi_teacher_kd``; raise ``ValueError``/``TypeError`` with a clear message.

    Shared by every implementation so that all of them reject bad input identically, before any kernel runs.
    """
    if not isinstance(student_logits, Tensor) or not isinstance(teacher_logits, Tensor):
        raise TypeError("multi_teacher_kd: student_logits and teacher_logits must be tensors")
    if not isinstance(weights, Tensor):
        raise TypeError("multi_teacher_kd: weights must be a tensor of shape [K] or [K, B]")
    if mode not in MODES:
        raise ValueError(f"multi_teacher_kd: mode must be one of {MODES}, got {mode!r}")
    if not (isinstance(temperature, (int, float)) and math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"multi_teacher_kd: temperature must be a finite number > 0, got {temperature!r}")
    for name, t in (("student_logits", student_logits), ("teacher_logits", teacher_logits), ("weights", weights)):
        if not t.dtype.is_floating_point:
            raise TypeError(f"multi_teacher_kd: {name} must be floating point, got {t.dtype}")
    if student_logits.dim() != 2:
        raise ValueError(f"multi_teacher_kd: student_logits must be [B, C], got shape {tuple(student_logits.shape)}")
    if teacher_logits.dim() != 3:
        raise ValueError(f"multi_teacher_kd: teacher_logits must be [K, B, C], got shape {tuple(teacher_logits.shape)}")
    k, b, c = teacher_logits.shape
    if k == 0:
        raise ValueError("multi_teacher_kd: at least one teacher is needed (K = 0)")
    if (b, c) != tuple(student_logits.shape):
        raise ValueError(
            f"multi_teacher_kd: teacher_logits {tuple(teacher_logits.shape)} do not match "
            f"student_logits {tuple(student_logits.shape)} (expected [K, {student_logits.shape[0]}, "
            f"{student_logits.shape[1]}])"
        )
    if weights.dim() == 1:
        if weights.shape[0] != k:
            raise ValueError(f"multi_teacher_kd: weights has {weights.shape[0]} entries for K = {k} teachers")
    elif weights.dim() == 2:
        if tuple(weights.shape) != (k, b):
            raise ValueError(f"multi_teacher_kd: weights must be [K, B] = [{k}, {b}], got {tuple(weights.shape)}")
    else:
        raise ValueError(f"multi_teacher_kd: weights must be [K] or [K, B], got shape {tuple(weights.shape)}")
    devices = {student_logits.device, teacher_logits.device, weights.device}
    if len(devices) != 1:
        raise ValueError(f"multi_teacher_kd: all tensors must be on one device, got {sorted(map(str, devices))}")


def gated_weights(weights: Tensor, keep: Tensor, renormalize: bool) -> Tensor:
    """``w' = w * keep``, divided by its per-row sum over teachers when ``renormalize`` (0 where nothing is kept)."""
    gated = weights * keep.to(weights.dtype)
    if renormalize:
        total = gated.sum(0, keepdim=True)
        gated = torch.where(total > 0, gated / torch.where(total > 0, total, torch.ones_like(total)), 0.0)
    return gated


def multi_teacher_kd(
    student_logits: Tensor,
    teacher_logits: Tensor,
    weights: Tensor,
    *,
    temperature: float,
    gate_threshold: float = math.inf,
    mode: str = "multiclass",
    renormalize: bool = False,
) -> tuple[Tensor, Tensor, Tensor]:
    """Tau^2-scaled, entropy-gated, weighted multi-teacher KL divergence per row.

    Args:
        student_logits: ``[B, C]`` student logits (differentiable).
        teacher_logits: ``[K, B, C]`` stacked teacher logits (no gradient flows to them).
        weights: ``[K]`` or ``[K, B]`` teacher weights (no gradient flows to them).
        temperature: distillation temperature ``tau > 0``.
        gate_threshold: entropy gate ``chi`` in nats; a teacher row is kept when its entropy is below it.
        mode: ``"multiclass"`` (softmax over C) or ``"multilabel"`` (independent sigmoid per class).
        renormalize: divide the gated weights by their sum over teachers, per row.

    Returns:
        ``(loss[B], keep[K, B] bool, entropy[K, B])``; ``loss`` and ``entropy`` are float32 (float64 for float64 input).
    """
    check_kd_arguments(student_logits, teacher_logits, weights, temperature, mode)
    acc = accumulation_dtype(student_logits.dtype)
    tau = float(temperature)
    s = student_logits.to(acc)
    t = teacher_logits.detach().to(acc)
    k, b, _ = t.shape
    w = weights.detach().to(acc)
    w = w[:, None].expand(k, b) if w.dim() == 1 else w

    if mode == "multiclass":
        log_q = F.log_softmax(t / tau, dim=-1)
        log_p = F.log_softmax(s / tau, dim=-1)
        kl = (log_q.exp() * (log_q - log_p.unsqueeze(0))).sum(-1)  # [K, B]
        log_r = F.log_softmax(t, dim=-1)
        entropy = -(log_r.exp() * log_r).sum(-1)
    else:
        # Bernoulli KL per class: q log(q/p) + (1-q) log((1-q)/(1-p)), with log(1-sigmoid(x)) = logsigmoid(-x).
        log_q1, log_q0 = F.logsigmoid(t / tau), F.logsigmoid(-t / tau)
        log_p1, log_p0 = F.logsigmoid(s / tau), F.logsigmoid(-s / tau)
        q1 = log_q1.exp()
        kl = (q1 * (log_q1 - log_p1) + (1 - q1) * (log_q0 - log_p0)).sum(-1)
        r1, log_r1, log_r0 = torch.sigmoid(t), F.logsigmoid(t), F.logsigmoid(-t)
        entropy = -(r1 * log_r1 + (1 - r1) * log_r0).mean(-1)

    keep = entropy < gate_threshold
    gated = gated_weights(w, keep, renormalize)
    loss = tau * tau * (gated * kl).sum(0)
    return loss, keep, entropy.detach()


def multi_teacher_kd_grad(
    student_logits: Tensor,
    teacher_logits: Tensor,
    weights: Tensor,
    *,
    temperature: float,
    gate_threshold: float = math.inf,
    mode: str = "multiclass",
    renormalize: bool = False,
) -> Tensor:
    """Closed-form gradient ``d loss[b] / d S[b, c] = tau * sum_k w'[k,b] (p[b,c] - q_k[b,c])`` of the op.

    This is the per-row gradient a fused kernel writes during its forward pass (before scaling by the incoming
    gradient). Returned in the accumulation dtype.
    """
    check_kd_arguments(student_logits, teacher_logits, weights, temperature, mode)
    acc = accumulation_dtype(student_logits.dtype)
    tau = float(temperature)
    _, keep, _ = multi_teacher_kd(
        student_logits, teacher_logits, weights, temperature=tau, gate_threshold=gate_threshold, mode=mode
    )
    k, b, _ = teacher_logits.shape
    w = weights.detach().to(acc)
    gated = gated_weights(w[:, None].expand(k, b) if w.dim() == 1 else w, keep, renormalize)
    s, t = student_logits.detach().to(acc), teacher_logits.detach().to(acc)
    if mode == "multiclass":
        p, q = torch.softmax(s / tau, -1), torch.softmax(t / tau, -1)
    else:
        p, q = torch.sigmoid(s / tau), torch.sigmoid(t / tau)
    return tau * (gated.sum(0)[:, None] * p - (gated[:, :, None] * q).sum(0))


def check_average_arguments(averaged: Sequence[Tensor], current: Sequence[Tensor]) -> None:
    """Validate the tensor lists of ``average_weights_``: same length, shapes, dtypes and devices."""
    if len(averaged) != len(current):
        raise ValueError(f"average_weights_: {len(averaged)} averaged tensors but {len(current)} current tensors")
    for i, (a, c) in enumerate(zip(averaged, current, strict=False)):
        if a.shape != c.shape:
            raise ValueError(f"average_weights_: tensor {i} shape {tuple(a.shape)} != {tuple(c.shape)}")
        if a.dtype != c.dtype:
            raise TypeError(f"average_weights_: tensor {i} dtype {a.dtype} != {c.dtype}")
        if a.device != c.device:
            raise ValueError(f"average_weights_: tensor {i} on {a.device} and {c.device}")


@torch.no_grad()
def average_weights_(averaged: Sequence[Tensor], current: Sequence[Tensor], weight: float | Tensor) -> None:
    """In place: ``averaged[i] += (current[i] - averaged[i]) * weight`` for floating tensors, copy for integer ones.

    ``weight = 1 / (n + 1)`` gives RoS-KD's running mean (Eq. 1), ``weight = 1 - decay`` an EMA. ``weight`` may be
    a Python number or a 0-d tensor (a device tensor keeps the call free of host synchronisation).
    """
    check_average_arguments(averaged, current)
    for a, c in zip(averaged, current, strict=False):
        if a.dtype.is_complex:
            w = weight.to(a.device) if isinstance(weight, Tensor) else weight
            a.add_((c - a) * w)
        elif a.dtype.is_floating_point:
            acc = accumulation_dtype(a.dtype)
            w = weight.to(device=a.device, dtype=acc) if isinstance(weight, Tensor) else weight
            a.copy_(a.to(acc) + (c.to(acc) - a.to(acc)) * w)
        else:
            a.copy_(c)
