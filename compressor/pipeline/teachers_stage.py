"""Teachers stage: one teacher per overlapping subset, each with its own architecture, trained on noisy labels.

Disabled when the student learns from no teacher (``distillation.alpha = 0``, Baseline I): nothing is trained.
With ``teachers.models`` the teachers are existing files (``compressor.pipeline.teacher_files``): rank 0 checks
each one used as it is against the data and installs it (no training); only the ones with ``finetune: true`` train,
starting from their file. ``teachers.pretrained`` starts every trained teacher from one weights file. Every start
file is loaded once before any teacher trains, so a bad file fails the stage at once.
``teachers.messy`` corrupts the teachers' targets per batch (messy collaboration MC-T); ``teachers.training.target``
picks their self-KD target.

Teachers already trained with the same stage key (weights and summary present) are kept. The others are trained in
rounds of ``world_size``: in a distributed run rank ``r`` trains the ``r``-th teacher of each round (teachers
``r, r + N, ...`` when none was finished), so N teachers train at once. At the end of every epoch the round's
states are gathered to rank 0, which writes them into one checkpoint (``--resume`` continues the round from it);
at the end of the round each teacher's weights and summary go to rank 0, which writes the weights first and the
summary last (its presence means "finished").

Each teacher is measured on the validation split after every epoch; ``teachers.training.select`` and
``early_stopping`` decide on those figures (``compressor.training.validation``). ``select: auto`` (the default) is
``best_val`` here when the data has a validation split: a teacher trained to convergence on noisy labels memorises
them, and its last epoch would hand them on to the student as targets. The test split is not read here:
the metrics stage measures the saved teachers on it.
"""

from __future__ import annotations

import hashlib
import time

from compressor import distributed
from compressor.checkpoint import ModelInfo, save_classifier
from compressor.io import sha256_file
from compressor.models import count_parameters
from compressor.pipeline.checks import check_data_support
from compressor.pipeline.context import RunContext
from compressor.pipeline.data_stage import subset_indices
from compressor.pipeline.records import TeacherSummary
from compressor.pipeline.run_tracker import stage_tracker
from compressor.pipeline.stage import LAYOUT, Stage
from compressor.pipeline.teacher_files import check_starts, install_teacher, teacher_files_key, teacher_start
from compressor.progress import console
from compressor.recipes import train_supervised
from compressor.seeding import generator, seed_everything
from compressor.tracking import Tracker, log_history
from compressor.tracking.hook import TrackingHook
from compressor.training.checkpointing import EpochCheckpoints, EpochState, cpu_copy


def _finished(ctx: RunContext, index: int, key: str) -> TeacherSummary | None:
    """Summary of teacher ``index`` if it was already trained (or installed) with the same inputs and its model file
    is intact (resume within the stage)."""
    try:
        record = TeacherSummary.read(ctx.layout.teacher_summary(index))
        intact = record.weights_sha256 == sha256_file(ctx.teacher_paths()[index])
    except (OSError, ValueError):  # not finished: a file missing or unreadable
        return None
    return record if record.key == key and intact else None


def round_checkpoints(ctx: RunContext, members: list[int]) -> EpochCheckpoints:
    """The epoch checkpoint of one round of teachers (identified by the stage key and the round's teachers)."""
    key = hashlib.sha256(f"{ctx.current_key}:teachers={members}".encode()).hexdigest()
    return EpochCheckpoints(ctx.layout.checkpoint("teachers", "round.pt"), key, ctx.dist, resume=ctx.resume)


def train_teacher(
    ctx: RunContext, index: int, checkpoints: EpochCheckpoints, resume: EpochState | None,
    tracker: Tracker | None = None,
) -> tuple[dict, ModelInfo, TeacherSummary]:
    """Train teacher ``index`` on its subset; return its CPU weights, model info and summary record.

    ``tracker``: where each epoch's figures go as the epoch ends (None: nowhere).
    """
    spec, bundle = ctx.spec, ctx.bundle()
    subset = subset_indices(ctx)[index]
    arch, initial = teacher_start(ctx, index)
    start = time.perf_counter()
    seed_everything(spec.seed, "teacher", index, "init")
    model, info, notes = ctx.initial_model(arch, spec.teachers.dropout, initial)
    if notes:
        console.print(f"  teacher {index}: starts from {initial.path}; {'; '.join(notes)}", highlight=False,
                      markup=False)
    if resume is not None:
        console.print(f"  teacher {index}: resuming after epoch {resume.epoch + 1} of "
                      f"{spec.teachers.training.epochs}", highlight=False)
    training = spec.teachers.training.with_select(prefer_best_val=len(bundle.val) > 0)
    history = train_supervised(
        model, bundle.train.subset(subset), training, bundle.task, ctx.device,
        generator(spec.seed, "teacher", index, "batches"), description=f"teacher {index} ({arch})",
        messy_rate=spec.teachers.messy.rate, checkpoints=checkpoints, resume=resume, val=bundle.val,
        hooks=[] if tracker is None else [TrackingHook(tracker, f"teacher_{index}")],
    )
    record = TeacherSummary(
        key=ctx.current_key, name=f"teacher_{index}", arch=arch, params=count_parameters(model),
        subset_size=int(len(subset)), subset_noise_rate=float(bundle.train.noise_mask[subset].mean()),
        messy_rate=spec.teachers.messy.rate, seconds=round(time.perf_counter() - start, 2), rank=ctx.dist.rank,
        history=history.as_dict(), selection=history.selection, precision=history.precision,
        origin="finetuned" if spec.teachers.models else "trained", source=str(initial.path) if initial else "",
    )
    return cpu_copy(model.state_dict()), info, record


def write_teacher(ctx: RunContext, index: int, weights: dict, info: ModelInfo, record: TeacherSummary) -> None:
    """Rank 0: the teacher's weights, then its summary (written after the weights: its presence means finished)."""
    model = info.build()
    model.load_state_dict(weights)
    save_classifier(model, info, ctx.layout.teacher_weights(index))
    record.weights_sha256 = sha256_file(ctx.layout.teacher_weights(index))
    record.write(ctx.layout.teacher_summary(index))


def _install_and_check(ctx: RunContext) -> dict[int, TeacherSummary]:
    """Rank 0: the teachers already finished, with the existing ones used as they are installed first, and every
    start file checked: a bad file fails before any training."""
    count = ctx.spec.subsets.count
    finished = {i: record for i in range(count) if (record := _finished(ctx, i, ctx.current_key)) is not None}
    for i in range(count):
        if i not in finished and ctx.spec.teachers.used_as_is(i):
            finished[i] = install_teacher(ctx, i)
    check_starts(ctx, [i for i in range(count) if i not in finished])
    return finished


def run_teachers(ctx: RunContext) -> dict:
    """Train each teacher on its subset; write ``teachers/teacher_{i}.safetensors`` and a summary per teacher."""
    spec, dist = ctx.spec, ctx.dist
    count = spec.subsets.count
    with stage_tracker(ctx) as tracker:
        check_data_support(ctx)
        subset_indices(ctx)  # fails early (every rank alike) when a subset is empty
        finished = ctx.on_main("installing and checking the teacher files", _install_and_check, ctx)
        pending = [i for i in range(count) if i not in finished]
        for first in range(0, len(pending), dist.world_size):
            members = pending[first : first + dist.world_size]
            checkpoints = round_checkpoints(ctx, members)
            resume = checkpoints.load()
            result = None
            if dist.rank < len(members):
                result = (members[dist.rank], *train_teacher(ctx, members[dist.rank], checkpoints, resume, tracker))
            else:  # no teacher left for this rank in the last round: it still takes part in the epoch checkpoints
                for epoch in range(0 if resume is None else resume.epoch + 1, spec.teachers.training.epochs):
                    checkpoints.save(epoch)
            trained = distributed.gather_to_main(result)
            if dist.is_main:
                for index, weights, info, record in (r for r in trained if r is not None):
                    write_teacher(ctx, index, weights, info, record)
                    finished[index] = record
                    if tracker is not None and record.rank != dist.rank:  # trained elsewhere: log its epochs now
                        log_history(tracker, record.history, record.name)
                checkpoints.remove()
    if not dist.is_main:
        return {}
    summaries = [finished[i] for i in range(count)]
    return {"teachers": [{"name": s.name, "arch": s.arch, "params": s.params, "subset_size": s.subset_size,
                          "subset_noise_rate": s.subset_noise_rate, "val_accuracy": s.selection.get("val_accuracy"),
                          "epoch": s.selection.get("epoch")} for s in summaries]}


TEACHERS_STAGE = Stage(
    name="teachers",
    sections=("subsets", "teachers", "seed"),
    after=("data",),
    run=run_teachers,
    outputs=lambda spec: [LAYOUT.teacher_file(i, spec.teachers.is_onnx(i)) for i in range(spec.subsets.count)]
    + [LAYOUT.teacher_summary(i) for i in range(spec.subsets.count)],
    extra_key=teacher_files_key,  # the existing teachers' and the pretrained start's file contents
    enabled=lambda spec: spec.distillation.uses_teachers,
    distributed=True,
)
