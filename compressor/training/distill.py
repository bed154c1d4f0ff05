"""Multi-teacher distillation of the student (RoS-KD Eq. 4) with smooth parameter averaging (Eq. 1), and the
methods of the other papers as hooks on the same loop.

Per batch, for each learner (the student, and its peer in mutual distillation):

    rows[b] = (1 - alpha) * target_loss[b] + alpha * KD[b] + mutual.weight * KD_peer[b]
    loss    = mean_b rows[b]            (or GroupDistil's sum_d w_d * mean_{b in d} rows[b])

``KD[b] = tau^2 sum_m w'_mb KL(q_mb || p_b)`` comes from the fused op ``compressor.ops.multi_teacher_kd``, with
the teacher weights of ``distillation.weighting`` and CMD's entropy gate ``chi`` (``distillation.gate``);
``target_loss`` is the self-KD target of ``distillation.training.target`` (CE by default) on the batch's labels
after messy collaboration (MC-S). The student sees the soft-randomised input, the teachers the clean one; teacher
logits come from a ``TeacherLogits`` (fickle teachers keep dropout on) and then get signal-dependent noise and
random swapping. After ``averaging.warmup_epochs`` epochs, each epoch's student weights are folded into the
averaged student through ``compressor.ops.average_weights_``. ``alpha = 0`` (Baseline I) uses no teacher at all.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from compressor import ops
from compressor.data.types import Split
from compressor.methods.cmd import gate_threshold, peer_knowledge, training_progress
from compressor.methods.messy import messy_targets
from compressor.methods.soft_randomization import soft_randomize
from compressor.methods.teacher_noise import perturb_teacher_logits
from compressor.progress import progress_bar
from compressor.spec.training import DistillSpec
from compressor.training.averaging import WeightAverager
from compressor.training.batches import augment, batch_indices, iterate_inputs, to_float
from compressor.training.learner import Learner
from compressor.training.losses import labels_tensor
from compressor.training.supervised import History, batch_accuracy, output_size
from compressor.training.teacher_logits import TeacherLogits
from compressor.training.weighting import batch_teacher_weights


@dataclass
class Batch:
    """One mini-batch as the learners see it."""

    index: Tensor  # rows of the training split
    x: Tensor  # augmented input, as the teachers see it
    x_student: Tensor  # the students' input (soft-randomised when configured)
    labels: Tensor  # the given (possibly noisy) labels
    targets: Tensor  # the labels after messy collaboration (what the supervised term fits)
    corrupted: Tensor  # bool [B]: targets changed by messy collaboration
    groups: Tensor | None  # group label per row (GroupDistil)


@dataclass
class Knowledge:
    """The teachers' supervision of one batch: ``[K, B, C]`` logits and ``[K]`` or ``[K, B]`` weights."""

    logits: Tensor
    weights: Tensor


def make_batch(
    data: Split, idx: Tensor, spec: DistillSpec, task: str, num_classes: int, device: torch.device | str,
    generator: torch.Generator,
) -> Batch:
    """Load, augment and perturb the rows ``idx`` (soft-randomization, messy collaboration) as ``spec`` says."""
    x = augment(to_float(data.images[idx], device), spec.training.augment, generator)
    labels = labels_tensor(data.labels[idx.numpy()], device, task)
    targets, corrupted = messy_targets(labels, num_classes, spec.messy.rate, task, generator)
    groups = None if data.groups is None else torch.as_tensor(data.groups[idx.numpy()], device=device)
    x_student = soft_randomize(x, spec.soft_randomization.sigma, generator)
    return Batch(idx, x, x_student, labels, targets, corrupted, groups)


def teacher_knowledge(
    teachers: TeacherLogits, batch: Batch, spec: DistillSpec, task: str, generator: torch.Generator
) -> Knowledge:
    """Teacher logits of the clean batch (then logit noise and swapping) and this batch's teacher weights."""
    logits = perturb_teacher_logits(teachers(batch.x, batch.index), spec.teacher_noise, spec.temperature, generator)
    return Knowledge(logits, batch_teacher_weights(spec, logits, batch.labels, task, generator))


def distill_step(
    learners: Sequence[Learner], batch: Batch, knowledge: Knowledge | None, chi: float, spec: DistillSpec, mode: str,
    progress: float,
) -> None:
    """One optimiser step of every learner on ``batch`` (peers see each other's logits of the same step)."""
    outputs = [learner.model(batch.x_student) for learner in learners]
    total = outputs[0].new_zeros(())
    for i, learner in enumerate(learners):
        logits = outputs[i]
        supervised = learner.target.loss(logits, batch.targets, progress)
        rows = (1.0 - spec.alpha) * supervised
        figures: dict[str, float] = {}
        if knowledge is not None:
            kd, keep, _ = ops.multi_teacher_kd(
                logits, knowledge.logits, knowledge.weights, temperature=spec.temperature, gate_threshold=chi,
                mode=mode, renormalize=spec.gate.renormalize,
            )
            rows = rows + spec.alpha * kd
            figures.update(kd=float(kd.detach().sum()), kept=float(keep.sum()), judged=keep.numel())
        if len(learners) > 1:
            peer = outputs[1 - i]  # CMD mutual distillation: the other learner teaches this one
            exchange, exchange_keep = peer_knowledge(logits, peer, chi, spec.mutual.temperature, mode)
            rows = rows + spec.mutual.weight * exchange
            figures.update(exchange_kept=float(exchange_keep.sum()), exchange_judged=exchange_keep.numel())
        loss = learner.reduce(rows, batch.groups)
        total = total + loss
        n = len(batch.index)
        learner.add(n, loss=float(loss.detach()) * n, ce=float(supervised.detach().sum()),
                    acc=batch_accuracy(logits.detach(), batch.labels, mode) * n,
                    corrupted=float(batch.corrupted.sum()), **figures)
    for learner in learners:
        learner.optimizer.zero_grad(set_to_none=True)
    total.backward()  # the learners' graphs are disjoint (peers are detached), so one backward serves all
    for learner in learners:
        learner.optimizer.step()


def distill_student(
    student: torch.nn.Module,
    teachers: Sequence[torch.nn.Module],
    data: Split,
    spec: DistillSpec,
    task: str,
    device: torch.device | str,
    generator: torch.Generator,
    description: str = "distill student",
    peer: torch.nn.Module | None = None,
    num_classes: int | None = None,
) -> tuple[History, WeightAverager | None]:
    """Distil ``teachers`` into ``student`` (in place) on ``data`` with the noisy labels for the supervised term.

    Args:
        student: the model to train (in place).
        teachers: the K teachers; ignored (and may be empty) when ``spec.alpha == 0``.
        data: the training split (``data.groups`` is needed for GroupDistil).
        spec: the distillation spec.
        task: ``"multiclass"`` or ``"multilabel"``.
        device: where to train.
        generator: source of every random choice of the loop (batches, augmentation, weights, method noise).
        description: progress-bar label.
        peer: CMD's mutual-distillation peer, trained in place beside the student (None: no mutual distillation).
        num_classes: number of outputs (read from the student when None).

    Returns:
        The per-epoch history (loss, KD and supervised parts, share and count of teacher outputs past the gate,
        the gate threshold, the peer's figures prefixed ``peer_``) and the averager holding the smoothed student
        (None when averaging is disabled).

    Raises:
        ValueError: teachers are needed but missing, or GroupDistil is on and the data has no group labels.
    """
    train = spec.training
    mode = "multilabel" if task == "multilabel" else "multiclass"
    if spec.uses_teachers and not teachers:
        raise ValueError("distillation.alpha > 0 needs at least one teacher")
    if spec.group_dro.enabled and data.groups is None:
        raise ValueError("distillation.group_dro needs group labels for the training samples; the data has none")
    num_classes = num_classes or output_size(student, data, device)
    num_groups = int(data.groups.max()) + 1 if spec.group_dro.enabled else 0
    source = TeacherLogits(teachers, device, fickle=spec.teacher_noise.fickle) if spec.uses_teachers else None
    learners = [Learner.create("student", student, train, task, num_classes, spec.group_dro, num_groups, device)]
    if peer is not None:
        learners.append(Learner.create("peer", peer, train, task, num_classes, spec.group_dro, num_groups, device))
    averager: WeightAverager | None = None
    history = History()
    steps = -(-len(data) // train.batch_size)
    step = 0
    with progress_bar(description, train.epochs * steps) as bar:
        for epoch in range(train.epochs):
            thresholds = []
            for idx in batch_indices(len(data), train.batch_size, generator):
                batch = make_batch(data, idx, spec, task, num_classes, device, generator)
                knowledge = teacher_knowledge(source, batch, spec, task, generator) if source is not None else None
                progress = training_progress(epoch, train.epochs, step, train.epochs * steps, spec.gate.progress)
                chi = gate_threshold(spec.gate, progress, num_classes, mode)
                thresholds.append(chi)
                distill_step(learners, batch, knowledge, chi, spec, mode, (epoch + 1) / train.epochs)
                step += 1
                bar.advance()
            _log_epoch(history, learners, sum(thresholds) / len(thresholds))
            bar.note(f"loss {history.loss[-1]:.3f} kd {history.extra['kd'][-1]:.3f}")
            if spec.averaging.enabled and epoch >= spec.averaging.warmup_epochs:
                averager = averager or WeightAverager(student, spec.averaging.mode, spec.averaging.decay)
                averager.update(student)
    for learner in learners:
        learner.model.eval()
    if spec.averaging.enabled:
        if averager is None:  # warm-up longer than training: the average is the final weights
            averager = WeightAverager(student, spec.averaging.mode, spec.averaging.decay)
            averager.update(student)
        if spec.averaging.recompute_batchnorm:
            averager.recompute_batchnorm(iterate_inputs(data.images, train.batch_size, device))
    return history, averager


def _log_epoch(history: History, learners: Sequence[Learner], chi: float) -> None:
    """Append one epoch's figures of every learner (the peer's prefixed ``peer_``) and the mean gate threshold."""
    for learner in learners:
        figures = learner.close_epoch()
        if learner.name == "student":
            history.loss.append(figures.pop("loss"))
            history.accuracy.append(figures.pop("accuracy"))
            history.lr.append(figures.pop("lr"))
            history.log(**figures, **({"gate_threshold": chi} if math.isfinite(chi) else {}))
        else:
            history.log(**{f"{learner.name}_{key}": value for key, value in figures.items()})
