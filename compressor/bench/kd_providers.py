"""The providers compared by the ``multi_teacher_kd`` benchmark, each as a forward+backward step.

* ``eager``: the composite a user writes without the fused op: per teacher ``F.log_softmax`` of the tempered
  logits, ``F.kl_div(..., log_target=True)`` per row, the temperature-1 entropy that gates the teacher, the
  weighted sum and the ``tau^2`` scale. It does the same work as the op (loss, keep, entropy) in plain PyTorch.
* ``compile``: ``torch.compile`` of exactly that composite (default mode, static shapes, compiled per shape).
* ``reference``, ``cpp``, ``cuda``, ``triton``: ``compressor.ops.multi_teacher_kd(..., impl=name)``.

A step runs the forward, then ``torch.autograd.grad(loss.mean(), S)``, and returns the gradient so that it is
really computed (and so that its memory is counted). Teacher logits and weights receive no gradient.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from compressor import ops
from compressor.bench import report

BASELINES = ("eager", "compile")
PROVIDERS = BASELINES + ops.IMPLS  # eager, compile, reference, cpp, cuda, triton


def eager_composite(
    student_logits: Tensor, teacher_logits: Tensor, weights: Tensor, *, temperature: float, gate_threshold: float
) -> tuple[Tensor, Tensor, Tensor]:
    """Entropy-gated, weighted multi-teacher KD as written with ``torch.nn.functional``, one teacher at a time.

    Same contract as ``compressor.reference.multi_teacher_kd`` (multiclass, ``w[K]``, no renormalisation):
    ``loss[b] = tau^2 * sum_k w_k * [H(softmax(T_k[b])) < chi] * KL(softmax(T_k[b]/tau) || softmax(S[b]/tau))``.
    Low-precision logits are upcast inside ``log_softmax`` (``dtype=float32``), the usual idiom.
    """
    tau = temperature
    log_p = F.log_softmax(student_logits / tau, dim=-1, dtype=torch.float32)
    loss = torch.zeros(student_logits.shape[0], device=student_logits.device, dtype=torch.float32)
    keeps, entropies = [], []
    for k in range(teacher_logits.shape[0]):
        log_q = F.log_softmax(teacher_logits[k] / tau, dim=-1, dtype=torch.float32)
        log_r = F.log_softmax(teacher_logits[k], dim=-1, dtype=torch.float32)
        entropy = -(log_r.exp() * log_r).sum(-1)  # gate: teacher entropy at temperature 1
        keep = entropy < gate_threshold
        kl = F.kl_div(log_p, log_q, reduction="none", log_target=True).sum(-1)  # KL(q_k || p) per row
        loss = loss + weights[k] * keep * kl
        keeps.append(keep)
        entropies.append(entropy)
    return tau * tau * loss, torch.stack(keeps), torch.stack(entropies)


@dataclass
class KDCase:
    """Inputs of one benchmark shape: ``S[B,C]`` (requires grad), ``T[K,B,C]``, ``w[K]``, tau and the gate chi."""

    student: Tensor
    teachers: Tensor
    weights: Tensor
    temperature: float
    gate_threshold: float


def make_case(k: int, b: int, c: int, *, dtype: torch.dtype, device: torch.device | str) -> KDCase:
    """Random inputs (seed 0, tau = 2) built on ``device`` without a float32 ``[K,B,C]`` staging copy.

    Teacher rows get logit scales spread over [0.1, 6.1], so their entropies range from nearly uniform to confident
    and the gate ``chi = 0.75 ln C`` drops a share of the teacher rows (as a real gate does).
    """
    device = torch.device(device)
    gen = torch.Generator(device=device).manual_seed(0)
    student = (torch.randn(b, c, generator=gen, device=device, dtype=dtype) * 2.0).requires_grad_(True)
    teachers = torch.empty(k, b, c, device=device, dtype=dtype)
    for i in range(k):  # one teacher at a time keeps the peak at one [B, C] temporary
        scale = torch.rand(b, 1, generator=gen, device=device, dtype=torch.float32) * 6.0 + 0.1
        teachers[i].normal_(generator=gen).mul_(scale.to(dtype))
    weights = torch.rand(k, generator=gen, device=device, dtype=torch.float32) + 0.05
    return KDCase(student, teachers, weights, 2.0, 0.75 * math.log(max(c, 2)))


def available_providers(device: torch.device | str) -> list[str]:
    """The providers that can run on ``device`` here, in ``PROVIDERS`` order.

    Triton on the CPU only exists through the interpreter (``TRITON_INTERPRET=1``), whose timings mean nothing;
    it is left out.
    """
    return [*BASELINES, *report.timed_impls(device)]


def make_step(provider: str, case: KDCase) -> Callable[[], Tensor]:
    """A closure running one forward+backward of ``provider`` on ``case`` and returning ``dL/dS`` (``L = mean loss``).

    Building the ``compile`` provider resets Dynamo, so each shape is compiled afresh with static shapes (the
    recompile limit would otherwise silently send later shapes back to eager). The first call of a compiled or
    JIT-compiled provider compiles; time it only after a warm-up call.

    Raises:
        ValueError: ``provider`` is unknown or not available for the case's device.
    """
    s, t, w = case.student, case.teachers, case.weights
    tau, chi = case.temperature, case.gate_threshold
    if provider in BASELINES:

        def forward(s, t, w):
            return eager_composite(s, t, w, temperature=tau, gate_threshold=chi)

        if provider == "compile":
            torch._dynamo.reset()
            forward = torch.compile(forward, dynamic=False)
    elif provider in ops.IMPLS:
        ops.resolve_impl(provider, s.device)  # raises with the list of what is available

        def forward(s, t, w):
            return ops.multi_teacher_kd(s, t, w, temperature=tau, gate_threshold=chi, impl=provider)
    else:
        raise ValueError(f"unknown provider {provider!r}; choose from {', '.join(PROVIDERS)}")

    def step() -> Tensor:
        loss, _keep, _entropy = forward(s, t, w)
        (grad,) = torch.autograd.grad(loss.mean(), s)
        return grad

    return step
