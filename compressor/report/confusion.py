"""Confusion counts of a model on the test split, and the observed label-noise transition matrix."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import confusion_matrix

from compressor.task import Task


def confusion_counts(logits: np.ndarray, labels: np.ndarray, task: Task) -> np.ndarray:
    """Multiclass: ``[C, C]`` counts, rows = true class, columns = predicted.
    Multilabel: ``[L, 4]`` counts of TP, FP, FN, TN per label at threshold 0.5 (logit 0)."""
    logits = np.asarray(logits)
    if task.multilabel:
        pred = logits > 0
        truth = np.asarray(labels) > 0.5
        return np.stack([(pred & truth).sum(0), (pred & ~truth).sum(0), (~pred & truth).sum(0),
                         (~pred & ~truth).sum(0)], axis=1)
    return confusion_matrix(np.asarray(labels, dtype=np.int64), logits.argmax(1), labels=np.arange(logits.shape[1]))


def noise_transition(clean: np.ndarray, given: np.ndarray, classes: int) -> np.ndarray:
    """``T[i, j]`` = share of samples of clean class ``i`` whose given (possibly noisy) label is ``j`` (a row of
    zeros for a class without samples)."""
    return confusion_matrix(np.asarray(clean, dtype=np.int64), np.asarray(given, dtype=np.int64),
                            labels=np.arange(classes), normalize="true")
