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

Teacher logits come from the ``teacher_source`` given (e.g. ``CachedTeacherLogits`` over a float16 logit cache) or
from running the teachers per batch. With ``checkpoints`` the loop saves its state after every epoch and continues
from ``resume`` bit for bit (on CPU) as if never interrupted.

Distributed (``dist.world_size = N > 1``, one process per rank): the batch order, augmentation, method noise and
teacher weights are drawn for the whole global batch of ``training.batch_size`` rows from the shared generator,
identically on every rank (every rank draws the same numbers in the same order, so the generator never diverges);
each rank then trains on its contiguous slice of the batch (``Shard``) through ``DistributedDataParallel``, whose
gradient average equals the gradient of the global batch loss (``Learner.reduce``). Teachers run only on the
rank's slice and their logits are gathered (``ShardedTeacherLogits``); a logit cache is read for the whole batch
directly. A final batch with fewer rows than ranks is skipped (at most ``N - 1`` samples per epoch). Batch-norm
layers normalise each rank's slice with its own batch statistics (DDP's default; running statistics are rank 0's).
The averaged student is identical on every rank; its batch-norm recomputation is done on rank 0 alone.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from compressor import ops
from compressor.data.types import Split
from compressor.distributed import DistInfo, Shard
from compressor.methods.cmd import gate_threshold, peer_knowledge, training_progress
from compressor.methods.messy import messy_targets
from compressor.methods.soft_randomization import soft_randomize
from compressor.methods.teacher_noise import perturb_teacher_logits
from compressor.progress import progress_bar
from compressor.spec.training import DistillSpec
from compressor.training.averaging import WeightAverager
from compressor.training.batches import augment, batch_indices, iterate_inputs, to_float
from compressor.training.checkpointing import EpochCheckpoints, EpochState, restore_rng, rng_state
from compressor.training.learner import Learner
from compressor.training.losses import labels_tensor
from compressor.training.supervised import History, batch_accuracy, output_size
from compressor.training.teacher_logits import ShardedTeacherLogits, TeacherLogits
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

    def rows(self, start: int, stop: int) -> Batch:
        """The rows ``start:stop`` of the batch (a rank's slice)."""
        pick = lambda t: None if t is None else t[start:stop]  # noqa: E731
        return Batch(*(pick(getattr(self, name)) for name in self.__dataclass_fields__))


@dataclass
class Knowledge:
    """The teachers' supervision of one batch: ``[K, B, C]`` logits and ``[K]`` or ``[K, B]`` weights."""

    logits: Tensor
    weights: Tensor

    def rows(self, start: int, stop: int) -> Knowledge:
        """The knowledge of the batch rows ``start:stop`` (per-batch weights ``[K]`` are kept whole)."""
        weights = self.weights[:, start:stop] if self.weights.dim() == 2 else self.weights
        return Knowledge(self.logits[:, start:stop], weights)


TeacherSource = Callable[[Tensor, Tensor], Tensor]  # (inputs, row indices) -> [K, B, C] logits; see teacher_logits


def make_batch(
    data: Split, idx: Tensor, spec: DistillSpec, task: str, num_classes: int, device: torch.device | str,
    generator: torch.Generator,
) -> Batch:
    """Load, augment and perturb the rows ``idx`` (soft-randomization, messy collaboration) as ``spec`` says."""
    x = augment(to_float(data.images[idx], device, data.window), spec.training.augment, generator)
    labels = labels_tensor(data.labels[idx.numpy()], device, task)
    targets, corrupted = messy_targets(labels, num_classes, spec.messy.rate, task, generator)
    groups = None if data.groups is None else torch.as_tensor(data.groups[idx.numpy()], device=device)
    x_student = soft_randomize(x, spec.soft_randomization.sigma, generator)
    return Batch(idx, x, x_student, labels, targets, corrupted, groups)


def teacher_knowledge(
    teachers: TeacherSource, batch: Batch, spec: DistillSpec, task: str, generator: torch.Generator
) -> Knowledge:
    """Teacher logits of the clean batch (then logit noise and swapping) and this batch's teacher weights."""
    logits = perturb_teacher_logits(teachers(batch.x, batch.index), spec.teacher_noise, spec.temperature, generator)
    return Knowledge(logits, batch_teacher_weights(spec, logits, batch.labels, task, generator))


def distill_step(
    learners: Sequence[Learner], batch: Batch, knowledge: Knowledge | None, chi: float, spec: DistillSpec, mode: str,
    progress: float, batch_rows: int | None = None,
) -> None:
    """One optimiser step of every learner on ``batch`` (peers see each other's logits of the same step).

    ``batch`` is the whole batch in a single process, this rank's slice of a global batch of ``batch_rows`` rows
    in a distributed run (see ``Learner.reduce``).
    """
    outputs = [learner.forward(batch.x_student) for learner in learners]
    n = len(batch.index)
    batch_rows = batch_rows or n
    total = outputs[0].new_zeros(())
    for i, learner in enumerate(learners):
        logits = outputs[i]
        supervised = learner.supervised(logits, batch.targets, progress)
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
        loss, part = learner.reduce(rows, batch.groups, batch_rows)
        total = total + loss
        # part * batch_rows summed over the ranks and steps, divided by the rows, is the epoch's mean batch loss
        learner.add(n, loss=part * batch_rows, ce=float(supervised.detach().sum()),
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
    teacher_source: TeacherSource | None = None,
    checkpoints: EpochCheckpoints | None = None,
    resume: EpochState | None = None,
    dist: DistInfo | None = None,
) -> tuple[History, WeightAverager | None]:
    """Distil ``teachers`` into ``student`` (in place) on ``data`` with the noisy labels for the supervised term.

    Args:
        student: the model to train (in place).
        teachers: the K teachers; ignored (and may be empty) when ``spec.alpha == 0`` or ``teacher_source`` is given.
        data: the training split (``data.groups`` is needed for GroupDistil).
        spec: the distillation spec.
        task: ``"multiclass"`` or ``"multilabel"``.
        device: where to train.
        generator: source of every random choice of the loop (batches, augmentation, weights, method noise);
            seeded identically on every rank of a distributed run.
        description: progress-bar label.
        peer: CMD's mutual-distillation peer, trained in place beside the student (None: no mutual distillation).
        num_classes: number of outputs (read from the student when None).
        teacher_source: where the teachers' logits of a batch come from (e.g. ``CachedTeacherLogits``); None runs
            ``teachers`` on every batch (``TeacherLogits``, fickle when the spec says so).
        checkpoints: where to save the loop's state at the end of every epoch (None: no checkpoints).
        resume: a state saved by an earlier run of the same loop: training continues with the epoch after it.
            ``student`` and ``peer`` must be freshly built as in the saved run.
        dist: this process's place in a distributed run (None: single process).

    Returns:
        The per-epoch history (loss, KD and supervised parts, share and count of teacher outputs past the gate,
        the gate threshold, the peer's figures prefixed ``peer_``) and the averager holding the smoothed student
        (None when averaging is disabled). In a distributed run the figures cover every rank's rows.

    Raises:
        ValueError: teachers are needed but missing, or GroupDistil is on and the data has no group labels.
    """
    train = spec.training
    dist = dist or DistInfo()
    shard = Shard(dist.rank, dist.world_size)
    mode = "multilabel" if task == "multilabel" else "multiclass"
    if spec.uses_teachers and not teachers and teacher_source is None:
        raise ValueError("distillation.alpha > 0 needs at least one teacher")
    if spec.group_dro.enabled and data.groups is None:
        raise ValueError("distillation.group_dro needs group labels for the training samples; the data has none")
    num_classes = num_classes or output_size(student, data, device)
    num_groups = int(data.groups.max()) + 1 if spec.group_dro.enabled else 0
    source = None
    if spec.uses_teachers:
        source = teacher_source or TeacherLogits(teachers, device, fickle=spec.teacher_noise.fickle)
        if dist.enabled and isinstance(source, TeacherLogits):  # run the teachers on this rank's rows only
            source = ShardedTeacherLogits(source, shard)
    learners = [Learner.create("student", student, train, task, num_classes, spec.group_dro, num_groups, device,
                               dist)]
    if peer is not None:
        learners.append(Learner.create("peer", peer, train, task, num_classes, spec.group_dro, num_groups, device,
                                       dist))
    for learner in learners:
        learner.log_messy = spec.messy.rate > 0
    averager: WeightAverager | None = None
    history = History()
    first = 0
    if resume is not None:
        saved = resume.shared
        for learner, state in zip(learners, saved["learners"], strict=True):
            learner.restore(state)
        if saved["averager"] is not None:
            averager = WeightAverager(student, spec.averaging.mode, spec.averaging.decay)
            averager.load_state_dict(saved["averager"])
        generator.set_state(saved["generator"])
        history = History.from_state(saved["history"])
        restore_rng(resume.own["rng"], device)
        first = resume.epoch + 1
    for learner in learners:
        learner.wrap(device)
    steps = -(-len(data) // train.batch_size)
    step = first * steps
    with progress_bar(description, train.epochs * steps) as bar:
        bar.advance(step)
        for epoch in range(first, train.epochs):
            thresholds = []
            for idx in batch_indices(len(data), train.batch_size, generator):
                progress = training_progress(epoch, train.epochs, step, train.epochs * steps, spec.gate.progress)
                chi = gate_threshold(spec.gate, progress, num_classes, mode)
                thresholds.append(chi)
                step += 1
                bar.advance()
                if len(idx) < shard.world_size:
                    continue  # a rank would get no row; skipped identically on every rank (draws stay in step)
                batch = make_batch(data, idx, spec, task, num_classes, device, generator)
                knowledge = teacher_knowledge(source, batch, spec, task, generator) if source is not None else None
                if dist.enabled:
                    start, stop = shard.bounds(len(idx))
                    batch = batch.rows(start, stop)
                    knowledge = knowledge.rows(start, stop) if knowledge is not None else None
                distill_step(learners, batch, knowledge, chi, spec, mode, (epoch + 1) / train.epochs, len(idx))
            for learner in learners:
                learner.sync_buffers()
            _log_epoch(history, learners, sum(thresholds) / len(thresholds))
            bar.note(f"loss {history.loss[-1]:.3f} kd {history.extra['kd'][-1]:.3f}")
            if spec.averaging.enabled and epoch >= spec.averaging.warmup_epochs:
                averager = averager or WeightAverager(student, spec.averaging.mode, spec.averaging.decay)
                averager.update(student)
            if checkpoints is not None:
                checkpoints.save(epoch, shared={
                    "learners": [learner.state() for learner in learners], "generator": generator.get_state(),
                    "averager": None if averager is None else averager.state_dict(), "history": history.state(),
                }, own={"rng": rng_state(device)})
    for learner in learners:
        learner.model.eval()
    if spec.averaging.enabled:
        if averager is None:  # warm-up longer than training: the average is the final weights
            averager = WeightAverager(student, spec.averaging.mode, spec.averaging.decay)
            averager.update(student)
        if spec.averaging.recompute_batchnorm and dist.is_main:
            averager.recompute_batchnorm(iterate_inputs(data.images, train.batch_size, device, data.window))
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
