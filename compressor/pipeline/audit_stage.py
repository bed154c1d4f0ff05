"""Label-audit stage: flag the training labels most likely wrong from the teachers' out-of-sample predictions.

Runs after the teachers (it needs them and their subsets; an existing teacher used as it is, ``teachers.models``
without ``finetune``, counts as having seen no training row) and writes ``data/label_issues.csv`` with its summary
``data/label_audit.json`` (``compressor.data.label_audit`` has the method). Its key covers the data and the teachers
only, so changing ``data.label_issues`` (what distillation does with the flagged rows) re-runs distillation alone.
"""

from __future__ import annotations

import time

import numpy as np

from compressor.data.label_audit import (
    FILTER_BY,
    find_issues,
    out_of_sample_probabilities,
    seen_mask,
    write_issues_csv,
)
from compressor.metrics import predict_logits
from compressor.pipeline.context import RunContext
from compressor.pipeline.data_stage import subset_indices
from compressor.pipeline.records import LabelAudit
from compressor.pipeline.stage import LAYOUT, Stage


def teacher_probabilities(ctx: RunContext) -> np.ndarray:
    """``[K, N, C]`` probabilities of every teacher on every training image (evaluation mode, no augmentation)."""
    bundle = ctx.bundle()
    return np.stack([bundle.task.probabilities(predict_logits(teacher, bundle.train.images, ctx.device))
                     for teacher in ctx.load_teachers()])


def run_audit(ctx: RunContext) -> dict:
    """Write ``data/label_issues.csv`` and ``data/label_audit.json``; return the counts (and precision / recall)."""
    bundle = ctx.bundle()
    train = bundle.train
    start = time.perf_counter()
    seen = seen_mask(subset_indices(ctx), len(train))
    for index in range(len(seen)):
        if ctx.spec.teachers.used_as_is(index):  # an existing teacher, not trained on its subset in this run
            seen[index] = False
    probs, out_of_sample = out_of_sample_probabilities(teacher_probabilities(ctx), seen)
    issues = find_issues(train.labels, probs, out_of_sample, bundle.task)
    write_issues_csv(ctx.layout.label_issues, issues, bundle.task, bundle.class_names)
    precision = recall = None
    noise = train.noise_mask
    if noise.any():  # synthetic noise: the flags can be checked against the rows it corrupted
        hits = int(noise[issues.index].sum())
        precision = hits / len(issues) if len(issues) else 0.0
        recall = hits / int(noise.sum())
    record = LabelAudit(samples=len(train), flagged=len(issues), out_of_sample=float(out_of_sample.mean()),
                        method=f"cleanlab find_label_issues, filter_by={FILTER_BY}",
                        seconds=round(time.perf_counter() - start, 2), precision=precision, recall=recall)
    record.write(ctx.layout.label_audit)
    return {"flagged": record.flagged, "out_of_sample": round(record.out_of_sample, 4),
            **({"precision": round(precision, 4), "recall": round(recall, 4)} if precision is not None else {})}


AUDIT_STAGE = Stage(
    name="audit",
    sections=(),
    after=("data", "teachers"),
    run=run_audit,
    outputs=lambda spec: [LAYOUT.label_issues, LAYOUT.label_audit],
    enabled=lambda spec: spec.distillation.uses_teachers,
)
