"""Distillation stage: the student learns from the teachers; the averaged student is the final model.

Baseline I (``distillation.alpha = 0``) loads no teacher. With ``distillation.mutual.enabled`` a peer model trains
beside the student (CMD); it is evaluated and saved as ``student/peer.safetensors`` but the student stays the
deployed model.

The teachers' outputs are read from a view pool when ``distillation.view_pool`` allows it
(``compressor.pipeline.view_pool``): computed once for stored views of every training image, and the student
trains on those views. The loop saves an epoch checkpoint (student, peer, averager, group weights,
generator, RNG, history) that ``--resume`` continues from. In a distributed run every rank trains (DDP) and rank 0
alone evaluates and writes the results.
"""

from __future__ import annotations

import time

import numpy as np

from compressor.checkpoint import read_info, save_classifier
from compressor.data import Split
from compressor.data.label_audit import apply_issues, read_issues_csv
from compressor.metrics import split_metrics
from compressor.models import count_parameters
from compressor.pipeline.checks import check_data_support
from compressor.pipeline.context import RunContext, StageError
from compressor.pipeline.records import StudentSummary
from compressor.pipeline.stage import LAYOUT, Stage
from compressor.pipeline.teacher_files import student_files_key
from compressor.pipeline.view_pool import open_view_pool
from compressor.progress import console
from compressor.recipes import distill_student
from compressor.seeding import generator, seed_everything
from compressor.spec import Spec
from compressor.training.checkpointing import EpochCheckpoints
from compressor.training.teacher_logits import TeacherLogits


def check_runnable(ctx: RunContext) -> None:
    """``check_data_support``, and that fickle teachers were trained with dropout."""
    check_data_support(ctx)
    distill = ctx.spec.distillation
    if distill.uses_teachers and distill.teacher_noise.fickle:
        without = [p.name for p in ctx.teacher_paths() if read_info(p).dropout == 0.0]
        if without:
            raise StageError(f"distillation.teacher_noise.fickle needs teachers trained with dropout; {without} have "
                             "none (set teachers.dropout > 0)")


def distillation_split(ctx: RunContext) -> tuple[Split, np.ndarray | None, int]:
    """The training data distillation uses under ``data.label_issues``.

    Returns:
        The split (flagged rows dropped or relabelled, or as given), its rows in the training split (None when it is
        the whole split in order) and how many rows were dropped or relabelled.
    """
    bundle, mode = ctx.bundle(), ctx.spec.data.label_issues
    if mode == "report":
        return bundle.train, None, 0
    issues = read_issues_csv(ctx.layout.label_issues, bundle.task, bundle.num_classes)
    rows, labels = apply_issues(bundle.train.labels, issues, mode)
    split = bundle.train.subset(rows)
    split.labels = labels
    return split, (rows if mode == "drop" else None), len(issues)


def run_distill(ctx: RunContext) -> dict:
    """Distil; write ``student.safetensors`` (final), ``student/last.safetensors`` and ``student/summary.json``."""
    spec, bundle = ctx.spec, ctx.bundle()
    check_runnable(ctx)
    train, rows, changed = distillation_split(ctx)
    teachers = ctx.load_teachers() if spec.distillation.uses_teachers else []
    start = time.perf_counter()
    pool, pool_summary = None, None
    if teachers and rows is None:  # the pool is indexed by rows of the whole training split: not after a drop
        live = TeacherLogits(teachers, ctx.device, fickle=spec.distillation.teacher_noise.fickle)
        pool, pool_summary = open_view_pool(ctx, live)
    elif teachers and ctx.dist.is_main:
        console.print("  data.label_issues: drop: the teachers run live on every batch (no view pool)", highlight=False)
    seed_everything(spec.seed, "student", "init")
    student, info, notes = ctx.initial_model(spec.student.arch, spec.student.dropout, spec.student.pretrained)
    if notes and ctx.dist.is_main:
        console.print(f"  student: starts from {spec.student.pretrained.path}; {'; '.join(notes)}", highlight=False,
                      markup=False)
    peer, peer_info = None, None
    if spec.distillation.mutual.enabled:
        seed_everything(spec.seed, "peer", "init")
        peer_info = ctx.model_info(spec.distillation.mutual.peer_arch or spec.student.arch, spec.student.dropout)
        peer = peer_info.build()
    checkpoints = EpochCheckpoints(ctx.layout.checkpoint("distill", "state.pt"), ctx.current_key, ctx.dist,
                                   resume=ctx.resume)
    resume = checkpoints.load()
    if resume is not None and ctx.dist.is_main:
        console.print(f"  resuming after epoch {resume.epoch + 1} of {spec.distillation.training.epochs}",
                      highlight=False)
    history, averager = distill_student(
        student, teachers, train, spec.distillation, bundle.task, ctx.device,
        generator(spec.seed, "student", "batches"), peer=peer, num_classes=bundle.num_classes,
        checkpoints=checkpoints, resume=resume, dist=ctx.dist, view_pool=pool,
    )
    if not ctx.dist.is_main:
        return {}
    evaluate = lambda model: split_metrics(model, bundle.test, bundle.task, ctx.device)  # noqa: E731
    results = {"student": evaluate(student)}
    save_classifier(student, info, ctx.layout.last_student)
    if peer is not None:
        results["peer"] = evaluate(peer)
        save_classifier(peer, peer_info, ctx.layout.peer)
    final = student
    if averager is not None:
        results["student_averaged"] = evaluate(averager.model)
        final = averager.model
    final_name = "student_averaged" if averager is not None else "student"
    StudentSummary(
        arch=spec.student.arch, params=count_parameters(student), final=final_name,
        averaged_checkpoints=averager.count if averager is not None else 0, teachers_used=len(teachers),
        teacher_logits="view pool" if pool is not None else ("live" if teachers else None), view_pool=pool_summary,
        world_size=ctx.dist.world_size, peer_arch=peer_info.arch if peer_info is not None else None,
        peer_params=count_parameters(peer) if peer is not None else None,
        seconds=round(time.perf_counter() - start, 2), history=history.as_dict(), test=results,
        label_issues=spec.data.label_issues, changed_rows=changed,
    ).write(ctx.layout.student_summary)
    save_classifier(final, info, ctx.layout.final_student, extra={"final": final_name})
    return {"final": final_name, "accuracy": results[final_name]["accuracy"], "f1": results[final_name]["f1"]}


def _outputs(spec: Spec) -> list[str]:
    outputs = [LAYOUT.final_student, LAYOUT.last_student, LAYOUT.student_summary]
    return outputs + ([LAYOUT.peer] if spec.distillation.mutual.enabled else [])


DISTILL_STAGE = Stage(
    name="distill",
    sections=("student", "distillation", "seed", "data.label_issues"),
    after=("data", "teachers", "audit"),  # data too: Baseline I has no teachers stage to carry the data's key
    run=run_distill,
    outputs=_outputs,
    extra_key=student_files_key,  # the student's pretrained start file
    distributed=True,
)
