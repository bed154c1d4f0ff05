"""Distillation stage: the student learns from the teachers; the averaged student is the final model."""

from __future__ import annotations

import time

from compressor.checkpoint import save_classifier
from compressor.io import write_json
from compressor.metrics import classification_metrics, predict_logits
from compressor.models import count_parameters
from compressor.pipeline.context import RunContext
from compressor.pipeline.stage import Stage
from compressor.seeding import generator, seed_everything
from compressor.training.distill import distill_student

FINAL_STUDENT = "student.safetensors"


def run_distill(ctx: RunContext) -> dict:
    """Distil; write ``student.safetensors`` (final), ``student/last.safetensors`` and ``student/summary.json``."""
    spec, bundle = ctx.spec, ctx.bundle()
    teachers = ctx.load_teachers()
    start = time.perf_counter()
    seed_everything(spec.seed, "student", "init")
    info = ctx.model_info(spec.student.arch, spec.student.dropout)
    student = info.build()
    history, averager = distill_student(
        student, teachers, bundle.train, spec.distillation, bundle.task, ctx.device,
        generator(spec.seed, "student", "batches"),
    )
    evaluate = lambda model: classification_metrics(  # noqa: E731
        predict_logits(model, bundle.test.images, ctx.device), bundle.test.labels, bundle.task
    )
    results = {"student": evaluate(student)}
    save_classifier(student, info, ctx.path("student", "last.safetensors"))
    final = student
    if averager is not None:
        results["student_averaged"] = evaluate(averager.model)
        final = averager.model
    final_name = "student_averaged" if averager is not None else "student"
    summary = {
        "arch": spec.student.arch,
        "params": count_parameters(student),
        "final": final_name,
        "averaged_checkpoints": averager.count if averager is not None else 0,
        "seconds": round(time.perf_counter() - start, 2),
        "history": history.as_dict(),
        "test": results,
    }
    write_json(ctx.path("student", "summary.json"), summary)
    save_classifier(final, info, ctx.path(FINAL_STUDENT), extra={"final": final_name})
    return {"final": final_name, "accuracy": results[final_name]["accuracy"], "f1": results[final_name]["f1"]}


DISTILL_STAGE = Stage(
    name="distill",
    sections=("student", "distillation", "seed"),
    after=("teachers",),
    run=run_distill,
    outputs=lambda spec: [FINAL_STUDENT, "student/last.safetensors", "student/summary.json"],
)
