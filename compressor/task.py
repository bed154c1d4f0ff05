"""The prediction task, chosen once from the data's labels: one class per image, or a set of labels per image.

``Task`` is the only place that knows what the two tasks mean; every other module asks it (``task.multilabel``,
``task.loss``, ``task.correct``, ...) instead of comparing names. It is a ``str`` enum, so its value (``"multiclass"``
or ``"multilabel"``) is what JSON files, checkpoint metadata and exported ONNX models store, and ``Task(name)`` reads
it back. Methods work on numpy arrays and torch tensors alike unless they say otherwise; torch is imported only by
the methods that need it, so the ONNX runtime (numpy only) uses this module without loading PyTorch.

Two accuracies exist and are named apart:

* ``correct`` / exact match: a sample is right when its class (multiclass) or its whole label set (multilabel) is
  right. ``metrics.json``'s ``accuracy`` and the robustness figures use it (multi-label metrics add the per-label
  ``label_accuracy``).
* ``fit_accuracy``: the training history's ``accuracy``, agreement with the given (possibly noisy) training
  targets: top-1 for multiclass, per label (the mean over every entry) for multilabel.
"""

from __future__ import annotations

import math
from enum import Enum
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch


class Task(str, Enum):
    """``MULTICLASS``: softmax over C classes, integer labels. ``MULTILABEL``: a sigmoid per label, 0/1 rows."""

    MULTICLASS = "multiclass"
    MULTILABEL = "multilabel"

    def __str__(self) -> str:
        return self.value

    @property
    def multilabel(self) -> bool:
        """Whether every output is an independent yes/no label (Bernoulli) rather than one class of C."""
        return self is Task.MULTILABEL

    def labels_tensor(self, labels: Any, device: torch.device | str) -> torch.Tensor:
        """Labels as the tensor the losses expect: ``int64 [B]`` classes or ``float32 [B, L]`` 0/1 targets."""
        import torch

        return torch.as_tensor(labels).to(device, torch.float32 if self.multilabel else torch.int64)

    def loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Per-row supervised loss: cross-entropy, or binary cross-entropy averaged over the labels."""
        import torch.nn.functional as F

        if self.multilabel:
            return F.binary_cross_entropy_with_logits(logits, targets.float(), reduction="none").mean(1)
        return F.cross_entropy(logits, targets, reduction="none")

    def probabilities(self, logits: np.ndarray) -> np.ndarray:
        """Softmax over classes or a sigmoid per label of numpy ``logits`` (computed in float32 by torch)."""
        import torch

        t = torch.from_numpy(np.asarray(logits, dtype=np.float32))
        return (torch.sigmoid(t) if self.multilabel else torch.softmax(t, dim=1)).numpy()

    def correct(self, logits: Any, labels: Any) -> Any:
        """Per row: the class is right, or (multilabel) every label is right (exact match)."""
        if self.multilabel:
            return ((logits > 0) == (labels > 0.5)).all(1)
        return logits.argmax(1) == labels

    def accuracy(self, logits: np.ndarray, labels: np.ndarray) -> float:
        """Share of ``correct`` rows (0 without rows): top-1, or exact match of the label set."""
        return float(self.correct(logits, labels).mean()) if len(labels) else 0.0

    def agreement(self, logits_a: np.ndarray, logits_b: np.ndarray) -> float:
        """Share of rows on which two models predict the same class (or the same label set); 1 without rows."""
        # The predicted label set is ``logit > 0`` (probability > 1/2); the predicted class is the argmax.
        same = (logits_a > 0) == (logits_b > 0) if self.multilabel else logits_a.argmax(1) == logits_b.argmax(1)
        return float((same.all(axis=1) if self.multilabel else same).mean()) if len(logits_a) else 1.0

    def fit_accuracy(self, logits: torch.Tensor, targets: torch.Tensor) -> float:
        """The training history's accuracy: share of right classes, or (multilabel) of right label entries."""
        if self.multilabel:
            return float(((logits > 0).float() == targets).float().mean())
        return float((logits.argmax(1) == targets).float().mean())

    def uniform_entropy(self, num_classes: int) -> float:
        """Entropy of the uniform prediction in nats: ``log C``, or ``log 2`` per label (mean binary entropy)."""
        return math.log(2.0) if self.multilabel else math.log(max(num_classes, 2))

    def entropy(self, logits: torch.Tensor) -> torch.Tensor:
        """Per-row entropy of the prediction: softmax entropy, or the mean binary entropy per label."""
        import torch
        import torch.nn.functional as F

        if self.multilabel:
            p, log_p1, log_p0 = torch.sigmoid(logits), F.logsigmoid(logits), F.logsigmoid(-logits)
            return -(p * log_p1 + (1 - p) * log_p0).mean(-1)
        log_p = F.log_softmax(logits, dim=-1)
        return -(log_p.exp() * log_p).sum(-1)


TASKS = tuple(task.value for task in Task)  # the names a data set, a checkpoint or an ONNX model may declare
