"""Label-audit stage: flag the training labels most likely wrong from the teachers' out-of-sample predictions.

Runs after the teachers (it needs them and their subsets; an existing teacher used as it is, ``teachers.models``
without ``finetune``, counts as having seen no training row) and writes ``data/label_issues.csv`` with its summary
``data/label_audit.json`` (``compressor.data.label_audit`` has the method). Its key covers the data and the teachers
only, so changing ``data.label_issues`` (what distillation does with the flagged rows) re-runs distillation alone.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from compressor.data.batches import iterate_inputs
from compressor.data.label_audit import (
    FILTER_BY,
    find_issues,
    out_of_sample_probabilities,
    seen_mask,
    write_issues_csv,
)
from compressor.pipeline.context import RunContext
from compressor.pipeline.data_stage import subset_indices
from compressor.pipeline.records import LabelAudit
from compressor.pipeline.stage import LAYOUT, Stage

BATCH = 512  # training images read and run through every teacher at a time


@torch.no_grad()
def teacher_logits(ctx: RunContext) -> np.ndarray:
    """``[K, N, C]`` float32 logits of every teacher on every training image (evaluation mode, no augmentation).

    The training images are read once, batch by batch through the data set's window (a stored split is never read
    whole), and each batch goes through all K teachers.
    """
    train = ctx.bundle().train
    teachers = ctx.load_teachers()
    chunks: list[list[torch.Tensor]] = [[] for _ in teachers]
    for x in iterate_inputs(train.images, BATCH, ctx.device, train.window):
        for chunk, teacher in zip(chunks, teachers, strict=True):
            chunk.append(teacher.eval()(x).float().cpu())
    return np.stack([torch.cat(chunk).numpy() for chunk in chunks])


def run_audit(ctx: RunContext) -> dict:
    """Write ``data/label_issues.csv`` and ``data/label_audit.json``; return the counts (and precision / recall)."""
    bundle = ctx.bundle()
    train = bundle.train
    start = time.perf_counter()
    seen = seen_mask(subset_indices(ctx), len(train))
    for index in range(len(seen)):
        if ctx.spec.teachers.used_as_is(index):  # an existing teacher, not trained on its subset in this run
            seen[index] = False
    teacher_probs = np.stack([bundle.task.probabilities(logits) for logits in teacher_logits(ctx)])  # [K, N, C]
    probs, out_of_sample = out_of_sample_probabilities(teacher_probs, seen)
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
