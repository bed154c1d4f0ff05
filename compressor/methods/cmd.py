"""CMD (Li et al., "Not all knowledge is created equal"): confident knowledge selection and mutual distillation.

Knowledge of a model B reaches model A only where B is confident: ``H(p_B) < chi`` (entropy at temperature 1; for
multi-label outputs the mean binary entropy per class). The threshold follows Eq. 12,

    chi = H(u) / eta * 2 h(t / Gamma - 0.5, b2),   h(l, b) = 1 / (1 + exp(-l b)),

with ``H(u)`` the entropy of the uniform distribution (``log C``; ``log 2`` for multi-label), ``t / Gamma`` the
training progress in (0, 1]. ``b2 = 0`` makes chi static (CMD-S); ``b2 != 0`` progressive (CMD-P; ``b2 < 0``
tightens it over training). The special cases: all knowledge (no gate, ``chi = inf``) and zero knowledge
(``chi = 0``: no entropy is below 0).

The gate itself is the fused op's (``gate_threshold``); this module only computes chi (for the KD term of
``compressor.methods.kd`` too) and the mutual exchange. Mutual distillation here distils the peer's prediction
``p_B`` (SyncMKD form, Eq. 3, gated by Eq. 8): the paper's Eq. 10 uses B's refined label
``q_B = (1 - eps) q + eps p_B`` instead, whose label part A already receives from its own self-KD target.

Spec: ``distillation.gate`` and ``distillation.mutual`` (a peer trains beside the student; each learner's loss
gains ``mutual.weight * KD_peer``). The history logs ``exchange_pass_rate`` / ``exchange_passed`` per learner.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from compressor import ops
from compressor.methods.registry import MethodContext, register_method
from compressor.spec.methods import GateSpec, MutualSpec
from compressor.task import Task
from compressor.training.hooks import Hook


def logistic(value: float, slope: float) -> float:
    """``h(l, b) = 1 / (1 + exp(-l * b))`` (overflow-safe)."""
    z = -value * slope
    if z > 700:
        return 0.0
    return 1.0 / (1.0 + math.exp(z))


def training_progress(epoch: int, epochs: int, step: int, total_steps: int, granularity: str) -> float:
    """``t / Gamma`` in (0, 1]: ``(epoch + 1) / epochs`` or ``(step + 1) / total_steps`` (0-based counters)."""
    if granularity == "step":
        return (step + 1) / max(total_steps, 1)
    return (epoch + 1) / max(epochs, 1)


def gate_threshold(spec: GateSpec, progress: float, num_classes: int, task: Task) -> float:
    """Entropy threshold chi (nats) at training progress ``t / Gamma`` (see the module docstring)."""
    if spec.knowledge == "all":
        return math.inf
    if spec.knowledge == "zero":
        return 0.0
    slope = spec.b2 if spec.knowledge == "cmd_p" else 0.0
    return task.uniform_entropy(num_classes) / spec.eta * 2.0 * logistic(progress - 0.5, slope)


def step_threshold(spec: GateSpec, loop, num_classes: int, task: Task) -> float:
    """chi at the training loop's current step (its epoch, or its step among all steps, as ``spec.progress`` says)."""
    progress = training_progress(loop.epoch, loop.epochs, loop.step, loop.total_steps, spec.progress)
    return gate_threshold(spec, progress, num_classes, task)


def peer_knowledge(
    logits: Tensor, peer_logits: Tensor, chi: float, temperature: float, task: Task
) -> tuple[Tensor, Tensor]:
    """Gated KD from one peer: ``(loss[B], keep[B])`` with ``loss = tau^2 KL(p_peer || p) * [H(p_peer) < chi]``.

    ``peer_logits`` is detached: a peer is a teacher here, and learns from this model in its own loss.
    """
    weights = torch.ones(1, device=logits.device, dtype=torch.float32)
    loss, keep, _ = ops.multi_teacher_kd(logits, peer_logits.detach()[None], weights, temperature=temperature,
                                         gate_threshold=chi, mode=task)
    return loss, keep[0]


class MutualDistillation(Hook):
    """Each of two learners also learns from the other's gated prediction (see the module docstring)."""

    def __init__(self, gate: GateSpec, spec: MutualSpec, task: Task, num_classes: int):
        self.gate, self.spec, self.task, self.num_classes = gate, spec, task, num_classes
        self.chi = math.inf

    def on_step_start(self, loop) -> None:
        self.chi = step_threshold(self.gate, loop, self.num_classes, self.task)

    def loss(self, loop, index, batch, outputs, rows):
        exchange, keep = peer_knowledge(outputs[index], outputs[1 - index], self.chi, self.spec.temperature, self.task)
        loop.learners[index].log(exchange_kept=float(keep.sum()), exchange_judged=keep.numel())
        return rows + self.spec.weight * exchange

    def epoch_figures(self, loop, index) -> dict[str, float]:
        sums = loop.learners[index].sums
        if not sums.get("exchange_judged"):
            return {}
        return {"exchange_pass_rate": sums["exchange_kept"] / sums["exchange_judged"],
                "exchange_passed": sums["exchange_kept"]}


@register_method("mutual", order=60, builtin=True)
def _mutual(ctx: MethodContext, params: dict) -> Hook | None:
    if ctx.distill is None or len(ctx.learners) < 2:
        return None
    return MutualDistillation(ctx.distill.gate, ctx.distill.mutual, ctx.task, ctx.num_classes)
