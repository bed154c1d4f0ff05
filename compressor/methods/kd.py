"""Multi-teacher knowledge distillation (RoS-KD Eq. 4), gated by CMD's entropy threshold: the student's KD term.

Per batch the teachers' logits of the clean input come from the loop's teacher source (``TeacherLogits`` running
the teachers, or their stored outputs for the batch's views in a view pool); teacher noise and teacher weights
(``teacher_noise``, ``weighting``) act on them next. Per learner the per-row loss becomes

    rows[b] = (1 - alpha) * supervised[b] + alpha * KD[b],   KD[b] = tau^2 sum_m w'_mb KL(q_mb || p_b)

from the fused op ``compressor.ops.multi_teacher_kd``, where only teachers whose prediction entropy is below CMD's
threshold ``chi`` (``distillation.gate``, see ``compressor.methods.cmd``) count. ``alpha = 0`` (Baseline I) uses no
teacher: the loss is the supervised term alone. The history logs ``kd`` and ``ce`` (the supervised term) per row,
``gate_pass_rate`` / ``gate_passed`` (teacher outputs past the gate) and the epoch's mean ``gate_threshold``.
"""

from __future__ import annotations

import math

from compressor import ops
from compressor.methods.cmd import step_threshold
from compressor.methods.registry import MethodContext, register_method
from compressor.spec.training import DistillSpec
from compressor.task import Task
from compressor.training.hooks import Batch, Hook, Knowledge, TeacherSource


class KnowledgeDistillation(Hook):
    """Fetches each batch's teacher logits and adds the gated KD term to every learner's loss."""

    def __init__(self, spec: DistillSpec, task: Task, num_classes: int, source: TeacherSource | None):
        self.spec, self.task, self.num_classes, self.source = spec, task, num_classes, source
        self.chi = math.inf
        self.thresholds: list[float] = []  # this epoch's gate threshold per step

    def on_step_start(self, loop) -> None:
        self.chi = step_threshold(self.spec.gate, loop, self.num_classes, self.task)
        self.thresholds.append(self.chi)

    def on_batch(self, loop, batch: Batch) -> None:
        if self.source is not None:
            batch.knowledge = Knowledge(self.source(batch.x, batch.index, batch.view))

    def loss(self, loop, index, batch: Batch, outputs, rows):
        spec, learner = self.spec, loop.learners[index]
        learner.log(ce=float(rows.detach().sum()))
        rows = (1.0 - spec.alpha) * rows
        if batch.knowledge is not None:
            knowledge = batch.knowledge
            kd, keep, _ = ops.multi_teacher_kd(
                outputs[index], knowledge.logits, knowledge.weights, temperature=spec.temperature,
                gate_threshold=self.chi, mode=self.task, renormalize=spec.gate.renormalize,
            )
            rows = rows + spec.alpha * kd
            learner.log(kd=float(kd.detach().sum()), kept=float(keep.sum()), judged=keep.numel())
        return rows

    def epoch_figures(self, loop, index) -> dict[str, float]:
        learner = loop.learners[index]
        sums = learner.sums
        figures = {"kd": learner.mean("kd"), "ce": learner.mean("ce")}
        if sums.get("judged"):
            figures.update(gate_pass_rate=sums["kept"] / sums["judged"], gate_passed=sums["kept"])
        chi = sum(self.thresholds) / len(self.thresholds)
        if index == 0 and math.isfinite(chi):
            figures["gate_threshold"] = chi
        return figures

    def on_epoch_end(self, loop) -> None:
        self.thresholds = []


@register_method("kd", order=30, builtin=True)
def _kd(ctx: MethodContext, params: dict) -> Hook | None:
    if ctx.role != "student":
        return None
    return KnowledgeDistillation(ctx.distill, ctx.task, ctx.num_classes, ctx.teacher_source)
