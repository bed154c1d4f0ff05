"""Accuracy of logits against labels, in numpy (shared by the parity check and the int8 accuracy gate)."""

from __future__ import annotations

import numpy as np


def predictions(logits: np.ndarray, task: str) -> np.ndarray:
    """Predicted classes (argmax, multiclass) or label sets (logit > 0, i.e. sigmoid > 0.5, multilabel)."""
    return logits > 0 if task == "multilabel" else logits.argmax(axis=1)


def accuracy(logits: np.ndarray, labels: np.ndarray, task: str) -> float:
    """Top-1 accuracy (multiclass) or exact-match accuracy over all labels (multilabel)."""
    if len(labels) == 0:
        return 0.0
    pred = predictions(logits, task)
    if task == "multilabel":
        return float((pred == labels.astype(bool)).all(axis=1).mean())
    return float((pred == labels).mean())


def agreement(logits_a: np.ndarray, logits_b: np.ndarray, task: str) -> float:
    """Fraction of samples on which two models predict the same class (or the same label set)."""
    if len(logits_a) == 0:
        return 1.0
    a, b = predictions(logits_a, task), predictions(logits_b, task)
    same = (a == b).all(axis=1) if task == "multilabel" else a == b
    return float(same.mean())
