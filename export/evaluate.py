"""Accuracy of logits against labels, in numpy (shared by the parity check and the int8 accuracy gate)."""

from __future__ import annotations

import numpy as np

from compressor.task import Task


def accuracy(logits: np.ndarray, labels: np.ndarray, task: Task) -> float:
    """Top-1 accuracy (multiclass) or exact-match accuracy over all labels (multilabel)."""
    if len(labels) == 0:
        return 0.0
    return float(Task(task).correct(logits, labels).mean())


def agreement(logits_a: np.ndarray, logits_b: np.ndarray, task: Task) -> float:
    """Fraction of samples on which two models predict the same class (or the same label set)."""
    if len(logits_a) == 0:
        return 1.0
    task = Task(task)
    same = task.predictions(logits_a) == task.predictions(logits_b)
    return float((same.all(axis=1) if task.multilabel else same).mean())
