"""Teachers stage: one teacher per overlapping subset, each with its own architecture, trained on noisy labels.

Disabled when the student learns from no teacher (``distillation.alpha = 0``, Baseline I): nothing is trained.
``teachers.messy`` corrupts the teachers' targets per batch (messy collaboration MC-T); ``teachers.training.target``
picks their self-KD target.
"""

from __future__ import annotations

import time

from compressor.checkpoint import read_info, save_classifier
from compressor.io import read_json, write_json
from compressor.methods.group_metrics import split_metrics
from compressor.models import count_parameters
from compressor.pipeline.context import RunContext
from compressor.pipeline.data_stage import subset_indices
from compressor.pipeline.distill_stage import check_data_support
from compressor.pipeline.stage import Stage
from compressor.seeding import generator, seed_everything
from compressor.training.supervised import subset_noise_rate, train_supervised


def _teacher_summary_path(ctx: RunContext, index: int):
    return ctx.path("teachers", f"teacher_{index}.json")


def _finished(ctx: RunContext, index: int, key: str) -> dict | None:
    """Summary of teacher ``index`` if it was already trained with the same inputs (resume within the stage)."""
    checkpoint, summary = ctx.teacher_paths()[index], _teacher_summary_path(ctx, index)
    if not (checkpoint.exists() and summary.exists()):
        return None
    try:
        record = read_json(summary)
        read_info(checkpoint)
    except (OSError, ValueError):
        return None
    return record if record.get("key") == key else None


def run_teachers(ctx: RunContext) -> dict:
    """Train each teacher on its subset; write ``teachers/teacher_{i}.safetensors`` and a summary per teacher."""
    spec, bundle = ctx.spec, ctx.bundle()
    check_data_support(ctx)
    subsets = subset_indices(ctx)
    archs = spec.teacher_archs()
    stage_key = ctx.current_key
    summaries = []
    for i, (arch, index) in enumerate(zip(archs, subsets, strict=True)):
        done = _finished(ctx, i, stage_key)
        if done is not None:
            summaries.append(done)
            continue
        start = time.perf_counter()
        seed_everything(spec.seed, "teacher", i, "init")
        info = ctx.model_info(arch, spec.teachers.dropout)
        model = info.build()
        history = train_supervised(
            model, bundle.train.subset(index), spec.teachers.training, bundle.task, ctx.device,
            generator(spec.seed, "teacher", i, "batches"), description=f"teacher {i} ({arch})",
            messy_rate=spec.teachers.messy.rate,
        )
        metrics = split_metrics(model, bundle.test, bundle.task, ctx.device)
        record = {
            "key": stage_key,
            "name": f"teacher_{i}",
            "arch": arch,
            "params": count_parameters(model),
            "subset_size": int(len(index)),
            "subset_noise_rate": subset_noise_rate(bundle.train, index),
            "messy_rate": spec.teachers.messy.rate,
            "seconds": round(time.perf_counter() - start, 2),
            "history": history.as_dict(),
            "test": metrics,
        }
        save_classifier(model, info, ctx.teacher_paths()[i])
        write_json(_teacher_summary_path(ctx, i), record)  # after the weights: its presence means "finished"
        summaries.append(record)
    return {"teachers": [{k: s[k] for k in ("name", "arch", "params", "subset_size", "subset_noise_rate")}
                         | {"accuracy": s["test"]["accuracy"]} for s in summaries]}


TEACHERS_STAGE = Stage(
    name="teachers",
    sections=("subsets", "teachers", "seed"),
    after=("data",),
    run=run_teachers,
    outputs=lambda spec: [f"teachers/teacher_{i}.safetensors" for i in range(spec.subsets.count)]
    + [f"teachers/teacher_{i}.json" for i in range(spec.subsets.count)],
    enabled=lambda spec: spec.distillation.uses_teachers,
)
