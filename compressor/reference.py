"""Pure-PyTorch reference of the two fused ops: the executable form of their contract.

Every fast implementation (C++ CPU, CUDA, Triton) is tested against these functions. They favour
clarity over speed: the reference materialises ``[K, B, C]`` intermediates, the fused kernels never do. Arguments are
validated once, by ``compressor.ops`` (``check_kd_arguments``, ``check_average_arguments``); these functions assume
valid input.

Contract:

``multi_teacher_kd(S[B,C], T[K,B,C], w[K] | w[K,B], tau, chi, mode, renormalize)``

* dtypes: ``S`` and ``T`` are each float32, float64, bfloat16 or float16, not necessarily the same; each is read in
  its own dtype and all arithmetic runs in the *accumulation dtype* of the student (``accumulation_dtype``: float64
  for a float64 student, float32 otherwise), so narrower inputs are used exactly and a wider teacher is rounded to
  it. ``w`` (any floating dtype) is read in the accumulation dtype. ``loss`` and ``entropy`` are returned in the
  accumulation dtype, the gradient in the student's dtype.
* multiclass: ``q_k = softmax(T_k / tau)``, ``p = softmax(S / tau)``,
  ``KL(q_k || p) = sum_c q_kc (log q_kc - log p_c)``, gate entropy ``H = -sum_c r_c log r_c``, ``r = softmax(T_k)``.
* multilabel: ``q_k = sigmoid(T_k / tau)``, ``p = sigmoid(S / tau)``, KL is the sum over classes of the Bernoulli
  KLs, gate entropy is the mean over classes of the binary entropy of ``sigmoid(T_k)``.
* ``keep[k,b] = H[k,b] < chi``; ``w' = w * keep``, divided by ``sum_k w'`` per row when ``renormalize``
  (a row with nothing kept has loss 0).
* ``loss[b] = tau^2 * sum_k w'[k,b] * KL(q_k[b] || p[b])``.
* Gradient (both modes): ``dloss[b]/dS[b,c] = tau * sum_k w'[k,b] * (p[b,c] - q_k[b,c])``; teachers and weights
  receive no gradient.

``average_weights_(averaged, current, weight)``: ``avg += (cur - avg) * weight`` in place for every floating pair
(in float32 for float32/bfloat16/float16 tensors, float64 for float64; complex tensors as their real and imaginary
parts), integer and bool tensors copied.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from compressor.task import Task

# The op's ``mode`` argument: a ``Task`` or its value; the task says what it means (``Task(mode).multilabel``).
MODES = tuple(task.value for task in Task)


def accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype the ops compute and return their float outputs in: float64 for float64 inputs, else float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def gated_weights(weights: Tensor, keep: Tensor, renormalize: bool) -> Tensor:
    """``w' = w * keep`` (``[K]`` weights apply to every row), divided by its per-row sum over teachers when
    ``renormalize`` (0 where nothing is kept)."""
    gated = (weights[:, None] if weights.dim() == 1 else weights) * keep.to(weights.dtype)
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
    mode: Task | str = Task.MULTICLASS,
    renormalize: bool = False,
) -> tuple[Tensor, Tensor, Tensor]:
    """Tau^2-scaled, entropy-gated, weighted multi-teacher KL divergence per row.

    Args:
        student_logits: ``[B, C]`` student logits (differentiable).
        teacher_logits: ``[K, B, C]`` stacked teacher logits (no gradient flows to them).
        weights: ``[K]`` or ``[K, B]`` teacher weights (no gradient flows to them).
        temperature: distillation temperature ``tau > 0``.
        gate_threshold: entropy gate ``chi`` in nats; a teacher row is kept when its entropy is below it.
        mode: a ``Task`` or its value: ``"multiclass"`` (softmax over C) or ``"multilabel"`` (independent
            sigmoid per class); another value is a ``ValueError``.
        renormalize: divide the gated weights by their sum over teachers, per row.

    Returns:
        ``(loss[B], keep[K, B] bool, entropy[K, B])``; ``loss`` and ``entropy`` are float32 (float64 for float64 input).
    """
    multilabel = Task(mode).multilabel
    acc = accumulation_dtype(student_logits.dtype)
    tau = float(temperature)
    s = student_logits.to(acc)
    t = teacher_logits.detach().to(acc)
    w = weights.detach().to(acc)

    if not multilabel:
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
    mode: Task | str = Task.MULTICLASS,
    renormalize: bool = False,
) -> Tensor:
    """Closed-form gradient ``d loss[b] / d S[b, c] = tau * sum_k w'[k,b] (p[b,c] - q_k[b,c])`` of the op.

    This is the per-row gradient a fused kernel writes during its forward pass (before scaling by the incoming
    gradient). Returned in the accumulation dtype.
    """
    acc = accumulation_dtype(student_logits.dtype)
    tau = float(temperature)
    _, keep, _ = multi_teacher_kd(
        student_logits, teacher_logits, weights, temperature=tau, gate_threshold=gate_threshold, mode=mode
    )
    gated = gated_weights(weights.detach().to(acc), keep, renormalize)
    s, t = student_logits.detach().to(acc), teacher_logits.detach().to(acc)
    if not Task(mode).multilabel:
        p, q = torch.softmax(s / tau, -1), torch.softmax(t / tau, -1)
    else:
        p, q = torch.sigmoid(s / tau), torch.sigmoid(t / tau)
    return tau * (gated.sum(0)[:, None] * p - (gated[:, :, None] * q).sum(0))


@torch.no_grad()
def average_weights_(averaged: Sequence[Tensor], current: Sequence[Tensor], weight: float | Tensor) -> None:
    """In place: ``averaged[i] += (current[i] - averaged[i]) * weight`` for floating tensors, copy for integer ones.

    ``weight = 1 / (n + 1)`` gives RoS-KD's running mean (Eq. 1), ``weight = 1 - decay`` an EMA. ``weight`` may be
    a Python number or a 0-d tensor (a device tensor keeps the call free of host synchronisation).
    """
    for a, c in zip(averaged, current, strict=True):
        if a.dtype.is_complex:
            w = weight.to(a.device) if isinstance(weight, Tensor) else weight
            a.add_((c - a) * w)
        elif a.dtype.is_floating_point:
            acc = accumulation_dtype(a.dtype)
            w = weight.to(device=a.device, dtype=acc) if isinstance(weight, Tensor) else weight
            a.copy_(a.to(acc) + (c.to(acc) - a.to(acc)) * w)
        else:
            a.copy_(c)
