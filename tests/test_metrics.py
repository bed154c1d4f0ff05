"""Metrics against hand-computed answers."""

from __future__ import annotations

import numpy as np
import pytest

from compressor.metrics import classification_metrics
from compressor.task import Task


def test_multiclass_metrics_known_answer():
    labels = np.array([0, 0, 1, 1, 2, 2])
    logits = np.eye(3)[[0, 1, 1, 1, 2, 0]] * 5.0
    m = classification_metrics(logits, labels, Task.MULTICLASS)
    assert m["accuracy"] == pytest.approx(4 / 6)
    # per-class precision: 0 -> 1/2, 1 -> 2/3, 2 -> 1; recall: 1/2, 1, 1/2
    assert m["precision"] == pytest.approx((0.5 + 2 / 3 + 1) / 3)
    assert m["recall"] == pytest.approx((0.5 + 1 + 0.5) / 3)
    f1 = [2 * p * r / (p + r) for p, r in ((0.5, 0.5), (2 / 3, 1), (1, 0.5))]
    assert m["f1"] == pytest.approx(np.mean(f1))
    assert len(m["auc_per_class"]) == 3 and 0.5 < m["auc"] <= 1


def test_perfect_and_inverted_auc():
    labels = np.array([0, 1, 0, 1])
    good = np.array([[2.0, -2.0], [-2.0, 2.0], [1.0, 0.0], [0.0, 1.0]])
    assert classification_metrics(good, labels, Task.MULTICLASS)["auc"] == 1.0
    assert classification_metrics(-good, labels, Task.MULTICLASS)["auc"] == 0.0


def test_multilabel_metrics():
    labels = np.array([[1, 0], [0, 1], [1, 1], [0, 0]], dtype=np.float32)
    logits = np.array([[3, -3], [-3, 3], [3, -3], [-3, -3]], dtype=np.float32)
    m = classification_metrics(logits, labels, Task.MULTILABEL)
    assert m["accuracy"] == pytest.approx(3 / 4)  # exact match
    assert m["label_accuracy"] == pytest.approx(7 / 8)
    assert m["auc_per_class"][0] == 1.0 and m["auc"] > 0.8


def test_auc_undefined_class_is_none():
    labels = np.array([0, 0, 1])
    logits = np.array([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    m = classification_metrics(logits, labels, Task.MULTICLASS)
    assert m["auc_per_class"][2] is None and m["auc"] == 1.0
