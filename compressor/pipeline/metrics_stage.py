"""Metrics stage: gather every model's clean-test metrics and the label-noise summary into ``metrics.json``.

Where the test split has group labels, each model's metrics carry ``group_accuracy`` and ``worst_group_accuracy``
(GroupDistil). ``distillation`` records the per-epoch gate statistics (CMD) and the final group weights.
"""

from __future__ import annotations

from compressor.io import write_json
from compressor.pipeline.context import RunContext
from compressor.pipeline.records import DataSummary, StudentSummary, TeacherSummary
from compressor.pipeline.stage import LAYOUT, Stage


def collect_metrics(ctx: RunContext) -> dict:
    """The content of ``metrics.json`` from the stage summaries in the run directory."""
    layout = ctx.layout
    data = DataSummary.read(layout.data_summary)
    teachers = []
    if ctx.spec.distillation.uses_teachers:  # Baseline I trains no teacher
        for i in range(ctx.spec.subsets.count):
            t = TeacherSummary.read(layout.teacher_summary(i))
            teachers.append({"name": t.name, "arch": t.arch, "params": t.params, "subset_size": t.subset_size,
                             "subset_noise_rate": t.subset_noise_rate, "test": t.test, "messy_rate": t.messy_rate,
                             "origin": t.origin, "source": t.source})
    student = StudentSummary.read(layout.student_summary)
    models = {t["name"]: t["test"] for t in teachers}
    models.update(student.test)
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
    """Write ``metrics.json``."""
    metrics = collect_metrics(ctx)
    write_json(ctx.layout.metrics, metrics)
    final = metrics["test"][metrics["final_model"]]
    return {"final": metrics["final_model"], "accuracy": final["accuracy"], "f1": final["f1"]}


METRICS_STAGE = Stage(
    name="metrics",
    sections=("method",),
    after=("data", "teachers", "distill"),
    run=run_metrics,
    outputs=lambda spec: [LAYOUT.metrics],
)
