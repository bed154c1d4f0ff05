"""Metrics stage: every model's clean-test metrics, the validation figures and the label-noise summary into
``metrics.json``.

This is the first stage that reads the test split (with certify and report, the only ones allowed to): it loads
each saved model (the teachers, the students of ``student/summary.json``) and measures it on the test split.
Where the test split has group labels, each model's metrics carry ``group_accuracy`` and
``worst_group_accuracy`` (GroupDistil). ``distillation`` records the per-epoch gate statistics (CMD) and the final
group weights; ``validation`` the per-epoch validation curves, which epoch each training kept and why, and every
model's validation figures (on the validation labels as given). With ``tracking:`` the final metrics and the spec
go to the run's tracker.
"""

from __future__ import annotations

from pathlib import Path

from compressor.io import write_json
from compressor.metrics import split_metrics
from compressor.model_files import load_teacher
from compressor.pipeline.context import RunContext
from compressor.pipeline.records import DataSummary, StudentSummary, TeacherSummary
from compressor.pipeline.run_tracker import stage_tracker
from compressor.pipeline.stage import LAYOUT, Stage
from compressor.tracking import final_scalars, flatten

STUDENT_ORDER = ("student", "peer", "student_averaged")  # the order of the students in metrics.json


def validation_figures(teachers: list[TeacherSummary], student: StudentSummary, val_samples: int) -> dict:
    """``metrics.json``'s ``validation``: per-epoch curves, what each training kept, every model's figures."""
    curves, selection, models = {}, {}, {}
    histories = [(t.name, t.history, t.selection) for t in teachers]
    histories.append(("student", student.history, {k: v for k, v in student.selection.items() if k != "final"}))
    for name, history, kept in histories:
        if "val_loss" in history:
            curves[name] = {"loss": history["val_loss"], "accuracy": history["val_accuracy"]}
        if "peer_val_loss" in history:
            curves["peer"] = {"loss": history["peer_val_loss"], "accuracy": history["peer_val_accuracy"]}
        if kept:
            selection[name] = kept
            if name.startswith("teacher_"):
                models[name] = {"loss": kept["val_loss"], "accuracy": kept["val_accuracy"]}
    models.update({name: {"loss": v["loss"], "accuracy": v["accuracy"]} for name, v in student.val.items()})
    return {"samples": val_samples, "labels": "as given (noisy where noise was injected)", "curves": curves,
            "selection": selection, "final": student.selection.get("final", student.final), "models": models}


def collect_metrics(ctx: RunContext) -> dict:
    """The content of ``metrics.json``: the stage summaries in the run directory and every model's test metrics."""
    layout = ctx.layout
    bundle = ctx.bundle()
    data = DataSummary.read(layout.data_summary)

    def test_metrics(path: Path) -> dict:
        model = load_teacher(path, ctx.device)  # a compressor checkpoint, or an existing ONNX teacher
        return split_metrics(model, bundle.test, bundle.task, ctx.device)

    summaries, teachers, teacher_files = [], [], ctx.teacher_paths()
    if ctx.spec.distillation.uses_teachers:  # Baseline I trains no teacher
        for i in range(ctx.spec.subsets.count):
            t = TeacherSummary.read(layout.teacher_summary(i))
            summaries.append(t)
            teachers.append({"name": t.name, "arch": t.arch, "params": t.params, "subset_size": t.subset_size,
                             "subset_noise_rate": t.subset_noise_rate, "test": test_metrics(teacher_files[i]),
                             "messy_rate": t.messy_rate, "origin": t.origin, "source": t.source})
    student = StudentSummary.read(layout.student_summary)
    models = {t["name"]: t["test"] for t in teachers}
    models.update({name: test_metrics(layout.root / student.models[name]) for name in STUDENT_ORDER
                   if name in student.models})
    return {
        "task": data.task,
        "classes": data.classes,
        "noise": data.noise,
        "method": ctx.spec.method.preset,
        "teachers": teachers,
        "student": {"arch": student.arch, "params": student.params, "final": student.final,
                    "averaged_checkpoints": student.averaged_checkpoints,
                    "peer_arch": student.peer_arch, "peer_params": student.peer_params},
        "final_model": student.final,
        "distillation": distillation_figures(student.history),
        "test": models,
        "validation": validation_figures(summaries, student, data.noise["val"]["samples"]),
    }


def distillation_figures(history: dict) -> dict:
    """Per-epoch gate figures and the final group weights from the distillation history (absent ones omitted)."""
    keys = ("gate_pass_rate", "gate_passed", "gate_threshold", "exchange_pass_rate", "peer_exchange_pass_rate",
            "messy_rate")
    figures = {key: history[key] for key in keys if key in history}
    weights = sorted((k for k in history if k.startswith("group_weight_")), key=lambda k: int(k.rsplit("_", 1)[1]))
    if weights:
        figures["group_weights"] = [history[k][-1] for k in weights]
    return figures


def run_metrics(ctx: RunContext) -> dict:
    """Write ``metrics.json`` (and, with ``tracking:``, log the final metrics and the spec)."""
    metrics = collect_metrics(ctx)
    write_json(ctx.layout.metrics, metrics)
    with stage_tracker(ctx) as tracker:
        if tracker is not None:
            tracker.log_final(flatten(ctx.spec.model_dump(mode="json")), final_scalars(metrics))
    final = metrics["test"][metrics["final_model"]]
    return {"final": metrics["final_model"], "accuracy": final["accuracy"], "f1": final["f1"]}


METRICS_STAGE = Stage(
    name="metrics",
    sections=("method",),
    after=("data", "teachers", "distill"),
    run=run_metrics,
    outputs=lambda spec: [LAYOUT.metrics],
)
