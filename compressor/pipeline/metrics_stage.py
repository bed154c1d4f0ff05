"""Metrics stage: gather every model's clean-test metrics and the label-noise summary into ``metrics.json``."""

from __future__ import annotations

from compressor.io import read_json, write_json
from compressor.pipeline.context import RunContext
from compressor.pipeline.stage import Stage


def collect_metrics(ctx: RunContext) -> dict:
    """The content of ``metrics.json`` from the stage summaries in the run directory."""
    data = read_json(ctx.path("data", "summary.json"))
    teachers = []
    for i in range(ctx.spec.subsets.count):
        record = read_json(ctx.path("teachers", f"teacher_{i}.json"))
        teachers.append({k: record[k] for k in ("name", "arch", "params", "subset_size", "subset_noise_rate", "test")})
    student = read_json(ctx.path("student", "summary.json"))
    models = {t["name"]: t["test"] for t in teachers}
    models.update(student["test"])
    return {
        "task": data["task"],
        "classes": data["classes"],
        "noise": data["noise"],
        "teachers": teachers,
        "student": {"arch": student["arch"], "params": student["params"], "final": student["final"],
                    "averaged_checkpoints": student["averaged_checkpoints"]},
        "final_model": student["final"],
        "test": models,
    }


def run_metrics(ctx: RunContext) -> dict:
    """Write ``metrics.json``."""
    metrics = collect_metrics(ctx)
    write_json(ctx.path("metrics.json"), metrics)
    final = metrics["test"][metrics["final_model"]]
    return {"final": metrics["final_model"], "accuracy": final["accuracy"], "f1": final["f1"]}


METRICS_STAGE = Stage(
    name="metrics",
    sections=(),
    after=("data", "teachers", "distill"),
    run=run_metrics,
    outputs=lambda spec: ["metrics.json"],
)
