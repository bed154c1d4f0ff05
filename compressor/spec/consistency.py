"""Checks that span several spec sections, run after each section has been validated on its own."""

from __future__ import annotations

from typing import TYPE_CHECKING

from compressor.spec.presets import preset_problems
from compressor.task import Task

if TYPE_CHECKING:
    from compressor.spec.root import Spec

# Methods that only make sense for one distribution over classes (single-label tasks).
SINGLE_LABEL_ONLY = {"distillation.teacher_noise.swap": "random swapping re-orders one softmax distribution over "
                     "classes; multi-label outputs are independent per class"}


def check_methods(spec: Spec) -> None:
    """Raise ``ValueError`` listing every cross-section inconsistency of the methods in ``spec``."""
    problems = preset_problems(spec.method.preset, spec.subsets.count, spec.subsets.overlap)
    distill = spec.distillation
    if distill.teacher_noise.fickle and spec.teachers.dropout == 0.0:
        problems.append("distillation.teacher_noise.fickle keeps the teachers' dropout active while distilling, "
                        "but teachers.dropout is 0; set teachers.dropout > 0 (the paper: 0.1-0.5)")
    if spec.data.task == Task.MULTILABEL and distill.teacher_noise.swap != "none":
        problems.append(f"distillation.teacher_noise.swap is single-label only: "
                        f"{SINGLE_LABEL_ONLY['distillation.teacher_noise.swap']}")
    if spec.data.label_issues in ("drop", "relabel") and not distill.uses_teachers:
        problems.append(f"data.label_issues: {spec.data.label_issues} acts on the label audit, which needs the "
                        "teachers; distillation.alpha is 0 (no teacher is trained): use data.label_issues: report")
    if distill.group_dro.enabled and spec.data.source in ("digits", "folder"):
        problems.append(f"distillation.group_dro needs group labels, which data.source {spec.data.source!r} does not "
                        "provide; use an npz file with *_groups arrays or a CSV manifest with a group column")
    if problems:
        raise ValueError("; ".join(problems))
