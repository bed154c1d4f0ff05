"""Distillation stage: the student learns from the teachers; the averaged (or the selected) student is final.

Baseline I (``distillation.alpha = 0``) loads no teacher. With ``distillation.mutual.enabled`` a peer model trains
beside the student (CMD); it is saved as ``student/peer.safetensors`` but the student stays the deployed model.

The live student is measured on the validation split after every epoch. ``distillation.training.select``:

* ``last`` (and ``auto``, the default): the live student keeps its last epoch's weights; the final model is the
  averaged student when averaging is on, else the live student.
* ``best_val``: the live student keeps the weights of its epoch with the best validation accuracy (ties: lower
  validation loss, then the earlier epoch). With averaging on, the final model is whichever of that student and
  the averaged student (after its batch-norm recomputation) has the higher validation accuracy (ties: lower
  validation loss, then the averaged student); without averaging, that student.

``data.label_issues`` says what the student trains on: every training row as given (``report``), the rows the
label audit did not flag (``drop``), or every row with the suggested label on the flagged ones (``relabel``). Under
``auto`` (the default) two students are distilled, with ``report`` and with ``drop``, from the same initial weights
and batch order, and the one whose final model has the higher validation accuracy is kept (ties: lower validation
loss, then ``report``); ``student/summary.json`` records both candidates' validation figures under
``label_issues_choice``. Without a validation split, a teacher or the label audit's file, or when the audit flags
under 1% of the training rows, ``auto`` is ``report``.

Files: ``student.safetensors`` (the final model), ``student/last.safetensors`` (the live student as kept),
``student/averaged.safetensors`` (the averaged student, only when it is not the final one). The test split is not
read here: the metrics stage measures these files on it.

The teachers' outputs are read from a view pool when ``distillation.view_pool`` allows it
(``compressor.pipeline.view_pool``): computed once for stored views of every training image, and the student
trains on those views. The loop saves an epoch checkpoint (student, peer, averager, group weights,
generator, RNG, history) that ``--resume`` continues from. In a distributed run every rank trains (DDP) and rank 0
alone evaluates and writes the results.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch

from compressor.checkpoint import ModelInfo, read_info, save_classifier
from compressor.data import Split
from compressor.data.label_audit import apply_issues, read_issues_csv
from compressor.metrics import fit_figures
from compressor.models import count_parameters
from compressor.pipeline.checks import check_data_support
from compressor.pipeline.context import RunContext, StageError
from compressor.pipeline.records import StudentSummary
from compressor.pipeline.run_tracker import stage_tracker
from compressor.pipeline.stage import LAYOUT, Stage
from compressor.pipeline.teacher_files import student_files_key
from compressor.pipeline.view_pool import open_view_pool
from compressor.progress import console
from compressor.recipes import distill_student
from compressor.seeding import generator, seed_everything
from compressor.tracking import log_history
from compressor.tracking.hook import TrackingHook
from compressor.training.checkpointing import EpochCheckpoints
from compressor.training.loop import History
from compressor.training.teacher_logits import TeacherLogits
from compressor.training.view_pool import ViewPool


def check_runnable(ctx: RunContext) -> None:
    """``check_data_support``, and that fickle teachers were trained with dropout."""
    check_data_support(ctx)
    distill = ctx.spec.distillation
    if distill.uses_teachers and distill.teacher_noise.fickle:
        without = [p.name for p in ctx.teacher_paths() if read_info(p).dropout == 0.0]
        if without:
            raise StageError(f"distillation.teacher_noise.fickle needs teachers trained with dropout; {without} have "
                             "none (set teachers.dropout > 0)")


def choose_final(val: dict[str, dict], averaging: bool, select: str) -> str:
    """``student`` or ``student_averaged``: the final model (see the module docstring).

    Args:
        val: validation figures (``loss``, ``accuracy``) per model; may be empty with ``select: last``.
        averaging: whether there is an averaged student.
        select: ``last`` or ``best_val`` (``auto`` resolved by ``TrainSpec.with_select``).
    """
    if not averaging:
        return "student"
    if select != "best_val":
        return "student_averaged"
    live, averaged = val["student"], val["student_averaged"]
    better = (live["accuracy"], -live["loss"]) > (averaged["accuracy"], -averaged["loss"])
    return "student" if better else "student_averaged"


AUTO_MIN_FLAGGED = 0.01  # auto distils a second student only when the audit flags at least this share of the rows


def label_issue_modes(ctx: RunContext) -> list[str]:
    """The ``data.label_issues`` modes distillation trains a student for: the one the spec names, or under ``auto``
    ``report`` and ``drop`` (``report`` alone without teachers, a validation split, the audit's file (a stage list
    without the audit stage), or when the audit flags under ``AUTO_MIN_FLAGGED`` of the training rows: leaving out
    so few cannot change the student by more than the validation split can tell, and would double the cost)."""
    mode = ctx.spec.data.label_issues
    if mode != "auto":
        return [mode]
    bundle = ctx.bundle()
    if not ctx.spec.distillation.uses_teachers or not len(bundle.val) or not ctx.layout.label_issues.exists():
        return ["report"]
    issues = read_issues_csv(ctx.layout.label_issues, bundle.task, bundle.num_classes)
    enough = len(issues) > 0 and len(issues) >= AUTO_MIN_FLAGGED * len(bundle.train)
    return ["report", "drop"] if enough else ["report"]


def distillation_split(ctx: RunContext, mode: str) -> tuple[Split, np.ndarray | None, int]:
    """The training data distillation uses under the ``data.label_issues`` mode ``mode`` (not ``auto``).

    Returns:
        The split (flagged rows dropped or relabelled, or as given), its rows in the training split (None when it is
        the whole split in order) and how many rows were dropped or relabelled.
    """
    bundle = ctx.bundle()
    if mode == "report":
        return bundle.train, None, 0
    issues = read_issues_csv(ctx.layout.label_issues, bundle.task, bundle.num_classes)
    rows, labels = apply_issues(bundle.train.labels, issues, mode)
    split = bundle.train.subset(rows)
    split.labels = labels
    return split, (rows if mode == "drop" else None), len(issues)


@dataclass
class Candidate:
    """One student distilled under one ``data.label_issues`` mode, with what the stage writes about it."""

    mode: str
    models: dict[str, torch.nn.Module]
    info: ModelInfo
    peer_info: ModelInfo | None
    history: History
    averaged_checkpoints: int
    teacher_logits: str | None
    changed: int
    seconds: float
    val: dict[str, dict] = field(default_factory=dict)
    final: str = "student"

    def score(self) -> tuple[float, float]:
        """Validation accuracy, then minus the loss, of its final model (higher is better)."""
        figures = self.val[self.final]
        return figures["accuracy"], -figures["loss"]


def choose_label_issues(candidates: list[Candidate]) -> Candidate:
    """The candidate whose final model has the best validation accuracy (ties: lower validation loss, then the
    earlier candidate, ``report`` before ``drop``)."""
    return max(candidates, key=Candidate.score)  # the first of equal maxima


def run_distill(ctx: RunContext) -> dict:
    """Distil; write ``student.safetensors`` (final), ``student/last.safetensors`` and ``student/summary.json``."""
    with stage_tracker(ctx) as tracker:
        spec = ctx.spec
        check_runnable(ctx)
        modes = label_issue_modes(ctx)
        teachers = ctx.load_teachers() if spec.distillation.uses_teachers else []
        start = time.perf_counter()
        pool, pool_summary = None, None  # one pool for every candidate: drop reads it through the kept rows
        if teachers:
            live = TeacherLogits(teachers, ctx.device, fickle=spec.distillation.teacher_noise.fickle)
            pool, pool_summary = open_view_pool(ctx, live)
        candidates = []
        for mode in modes:
            if len(modes) > 1 and ctx.dist.is_main:
                console.print(f"  data.label_issues: auto: distilling with {mode}", highlight=False)
            prefix = "" if len(modes) == 1 else f"label_issues_{mode}/"  # the kept one is logged as student below
            hooks = [] if tracker is None else [TrackingHook(tracker, "student", prefix)]
            checkpoint = "state.pt" if len(modes) == 1 else f"state-{mode}.pt"
            candidates.append(_distil_candidate(ctx, teachers, pool, mode, hooks, checkpoint))
        if not ctx.dist.is_main:
            return {}
        chosen = choose_label_issues(candidates) if len(candidates) > 1 else candidates[0]
        if len(candidates) > 1:
            scores = ", ".join(f"{c.mode} {c.score()[0]:.3f}" for c in candidates)
            console.print(f"  data.label_issues: auto: kept {chosen.mode} (validation accuracy {scores})",
                          highlight=False)
            if tracker is not None:
                log_history(tracker, chosen.history.as_dict(), "student")
        _write_student(ctx, chosen, candidates, len(teachers), pool_summary, round(time.perf_counter() - start, 2))
        return {"final": chosen.final, "label_issues": chosen.mode,
                **({"val_accuracy": chosen.val[chosen.final]["accuracy"]} if chosen.val else {})}


def _distil_candidate(ctx: RunContext, teachers: list, pool: ViewPool | None, mode: str, hooks: list,
                      checkpoint: str) -> Candidate:
    """Train one student on the training data as ``mode`` leaves it; measure its models on the validation split."""
    spec, bundle = ctx.spec, ctx.bundle()
    train, rows, changed = distillation_split(ctx, mode)
    start = time.perf_counter()
    if pool is not None and rows is not None:  # the pool holds every training row; drop reads the kept ones
        pool = pool.subset(rows)
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
    checkpoints = EpochCheckpoints(ctx.layout.checkpoint("distill", checkpoint), ctx.current_key, ctx.dist,
                                   resume=ctx.resume)
    resume = checkpoints.load()
    if resume is not None and ctx.dist.is_main:
        console.print(f"  resuming after epoch {resume.epoch + 1} of {spec.distillation.training.epochs}",
                      highlight=False)
    # select: auto is last for the student (its averaged weights are the method's own guard), resolved here once
    distill = spec.distillation.model_copy(
        update={"training": spec.distillation.training.with_select(prefer_best_val=False)})
    history, averager = distill_student(
        student, teachers, train, distill, bundle.task, ctx.device,
        generator(spec.seed, "student", "batches"), peer=peer, num_classes=bundle.num_classes,
        checkpoints=checkpoints, resume=resume, dist=ctx.dist, view_pool=pool, val=bundle.val, hooks=hooks,
    )
    models = {"student": student, "peer": peer, "student_averaged": None if averager is None else averager.model}
    candidate = Candidate(
        mode=mode, models={name: model for name, model in models.items() if model is not None}, info=info,
        peer_info=peer_info, history=history, averaged_checkpoints=averager.count if averager is not None else 0,
        teacher_logits="view pool" if pool is not None else ("live" if teachers else None),
        changed=changed, seconds=round(time.perf_counter() - start, 2))
    if ctx.dist.is_main:
        if len(bundle.val):
            candidate.val = {name: fit_figures(model, bundle.val, bundle.task, ctx.device)
                             for name, model in candidate.models.items()}
        candidate.final = choose_final(candidate.val, averager is not None, distill.training.select)
    return candidate


def _write_student(ctx: RunContext, chosen: Candidate, candidates: list[Candidate], teachers_used: int,
                   pool_summary: dict | None, seconds: float) -> None:
    """Write the chosen candidate's weight files and ``student/summary.json`` (rank 0); ``seconds``: the whole
    distillation, view pool included."""
    spec, layout = ctx.spec, ctx.layout
    averaged_file = layout.final_student if chosen.final == "student_averaged" else layout.averaged_student
    files = {"student": layout.last_student, "peer": layout.peer, "student_averaged": averaged_file}
    layout.averaged_student.unlink(missing_ok=True)  # a stale one from an earlier run would be taken for this one's
    for name, model in chosen.models.items():
        if files[name] != layout.final_student:
            save_classifier(model, chosen.peer_info if name == "peer" else chosen.info, files[name])
    student, peer = chosen.models["student"], chosen.models.get("peer")
    choice = None
    if len(candidates) > 1:
        choice = {c.mode: {"final": c.final, **c.val[c.final], "changed_rows": c.changed, "seconds": c.seconds}
                  for c in candidates}
    StudentSummary(
        arch=spec.student.arch, params=count_parameters(student), final=chosen.final,
        averaged_checkpoints=chosen.averaged_checkpoints, teachers_used=teachers_used,
        teacher_logits=chosen.teacher_logits,
        view_pool=pool_summary, world_size=ctx.dist.world_size,
        peer_arch=chosen.peer_info.arch if chosen.peer_info is not None else None,
        peer_params=count_parameters(peer) if peer is not None else None,
        seconds=seconds, history=chosen.history.as_dict(),
        models={name: layout.relative(files[name]) for name in chosen.models}, val=chosen.val,
        selection={**chosen.history.selection, "final": chosen.final}, precision=chosen.history.precision,
        label_issues=chosen.mode, label_issues_choice=choice, changed_rows=chosen.changed,
    ).write(layout.student_summary)
    save_classifier(chosen.models[chosen.final], chosen.info, layout.final_student, extra={"final": chosen.final})


DISTILL_STAGE = Stage(
    name="distill",
    sections=("student", "distillation", "seed", "data.label_issues"),
    after=("data", "teachers", "audit"),  # data too: Baseline I has no teachers stage to carry the data's key
    run=run_distill,
    outputs=lambda spec: [LAYOUT.final_student, LAYOUT.last_student, LAYOUT.student_summary]
    + ([LAYOUT.peer] if spec.distillation.mutual.enabled else []),
    extra_key=student_files_key,  # the student's pretrained start file
    distributed=True,
)
