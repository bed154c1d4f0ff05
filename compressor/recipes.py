"""The two trainings of the pipeline on the one loop: a teacher (``train_supervised``, a single learner whose loss is
its supervised target) and the student (``distill_student``, whose loss the methods the spec turns on extend).

Both build the learners, the batch source and the hooks (``compressor.methods``) and run
``compressor.training.loop.Loop``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from compressor.data.batches import to_float
from compressor.data.types import Split
from compressor.distributed import DistInfo, Shard
from compressor.methods import MethodContext, build_hooks
from compressor.methods.averaging import ParameterAveraging, WeightAverager
from compressor.methods.self_kd import SelfKDTarget
from compressor.spec.training import DistillSpec, TrainSpec
from compressor.task import Task
from compressor.training.batch_source import ShuffledBatches
from compressor.training.checkpointing import EpochCheckpoints, EpochState
from compressor.training.hooks import TeacherSource
from compressor.training.learner import Learner
from compressor.training.loop import History, Loop
from compressor.training.teacher_logits import PooledTeacherLogits, ShardedTeacherLogits, TeacherLogits
from compressor.training.view_pool import ViewPool


@torch.no_grad()
def output_size(model: torch.nn.Module, data: Split, device: torch.device | str) -> int:
    """Number of outputs (classes or labels) of ``model``, read from one evaluation-mode forward pass."""
    was_training = model.training
    model.to(device).eval()
    size = int(model(to_float(data.images[:1], device, data.window)).shape[-1])
    model.train(was_training)
    return size


def train_supervised(
    model: torch.nn.Module,
    data: Split,
    spec: TrainSpec,
    task: Task,
    device: torch.device | str,
    generator: torch.Generator,
    description: str = "train",
    messy_rate: float = 0.0,
    checkpoints: EpochCheckpoints | None = None,
    resume: EpochState | None = None,
) -> History:
    """Train ``model`` in place on ``data`` with its learning target (CE / BCE by default) following ``spec``.

    Args:
        model: the classifier (trained in place, left in eval mode).
        data: training split with (noisy) labels.
        spec: epochs, batch size, optimiser, schedule, augmentation, learning target and extension methods.
        task: what the model predicts.
        device: where to train.
        generator: source of the batch order, augmentation and the methods' draws.
        description: progress-bar label.
        messy_rate: messy collaboration rate (MC-T): share of targets replaced by a wrong class in every batch.
        checkpoints: where to save the state at the end of each epoch (its ``own`` part; None: no checkpoints).
        resume: a state saved by an earlier run of the same loop: training continues with the epoch after it.
            ``model`` must be freshly built as in the saved run.

    Returns:
        The per-epoch history (mean loss, accuracy on the given labels, learning rate, share of messy targets).
    """
    num_classes = output_size(model, data, device)
    learner = Learner.create("teacher", model, spec, SelfKDTarget(spec.target, task, num_classes), device)
    ctx = MethodContext("teacher", spec, task, num_classes, data, [learner], device, DistInfo(), messy_rate=messy_rate)
    loop = Loop([learner], ShuffledBatches(data, spec.batch_size, spec.augment, task, device), build_hooks(ctx),
                epochs=spec.epochs, generator=generator, task=task, device=device, description=description)
    return loop.fit(checkpoints, resume)


def distill_student(
    student: torch.nn.Module,
    teachers: Sequence[torch.nn.Module],
    data: Split,
    spec: DistillSpec,
    task: Task,
    device: torch.device | str,
    generator: torch.Generator,
    description: str = "distill student",
    peer: torch.nn.Module | None = None,
    num_classes: int | None = None,
    teacher_source: TeacherSource | None = None,
    checkpoints: EpochCheckpoints | None = None,
    resume: EpochState | None = None,
    dist: DistInfo | None = None,
    view_pool: ViewPool | None = None,
) -> tuple[History, WeightAverager | None]:
    """Distil ``teachers`` into ``student`` (in place) on ``data`` with the noisy labels for the supervised term.

    Args:
        student: the model to train (in place).
        teachers: the K teachers; ignored (and may be empty) when ``spec.alpha == 0``, ``teacher_source`` or
            ``view_pool`` is given.
        data: the training split (``data.groups`` is needed for GroupDistil).
        spec: the distillation spec.
        task: what the models predict.
        device: where to train.
        generator: source of every random choice of the loop (batches, augmentation, weights, method noise);
            seeded identically on every rank of a distributed run.
        description: progress-bar label.
        peer: CMD's mutual-distillation peer, trained in place beside the student (None: no mutual distillation).
        num_classes: number of outputs (read from the student when None).
        teacher_source: where the teachers' logits of a batch come from; None runs ``teachers`` on every batch
            (``TeacherLogits``, fickle when the spec says so) or, with ``view_pool``, reads the pool.
        checkpoints: where to save the loop's state at the end of every epoch (None: no checkpoints).
        resume: a state saved by an earlier run of the same loop: training continues with the epoch after it.
            ``student`` and ``peer`` must be freshly built as in the saved run.
        dist: this process's place in a distributed run (None: single process).
        view_pool: the teachers' stored outputs for stored views of ``data``'s images: the student then trains on
            one stored view per image and epoch, and its KD target is read from the pool (None: views are drawn
            afresh as ``spec.training.augment`` says).

    Returns:
        The per-epoch history (loss, KD and supervised parts, share and count of teacher outputs past the gate,
        the gate threshold, the peer's figures prefixed ``peer_``) and the averager holding the smoothed student
        (None when averaging is disabled). In a distributed run the figures cover every rank's rows.

    Raises:
        ValueError: teachers are needed but missing, or GroupDistil is on and the data has no group labels.
    """
    train, dist = spec.training, dist or DistInfo()
    if spec.uses_teachers and not teachers and teacher_source is None and view_pool is None:
        raise ValueError("distillation.alpha > 0 needs at least one teacher")
    num_classes = num_classes or output_size(student, data, device)
    source = None
    if spec.uses_teachers:
        source = teacher_source or (PooledTeacherLogits(view_pool, device) if view_pool is not None else
                                    TeacherLogits(teachers, device, fickle=spec.teacher_noise.fickle))
        if dist.enabled and isinstance(source, TeacherLogits):  # run the teachers on this rank's rows only
            source = ShardedTeacherLogits(source, Shard(dist.rank, dist.world_size))
    learners = [Learner.create(name, model, train, SelfKDTarget(train.target, task, num_classes, dist), device, dist)
                for name, model in (("student", student), ("peer", peer)) if model is not None]
    ctx = MethodContext("student", train, task, num_classes, data, learners, device, dist, distill=spec,
                        messy_rate=spec.messy.rate, teacher_source=source)
    batches = ShuffledBatches(data, train.batch_size, train.augment, task, device,
                              views=view_pool.plan() if view_pool is not None else None)
    loop = Loop(learners, batches, build_hooks(ctx), epochs=train.epochs, generator=generator, task=task,
                device=device, description=description, dist=dist)
    history = loop.fit(checkpoints, resume)
    averaging = loop.hook(ParameterAveraging)
    return history, None if averaging is None else averaging.averager
