"""Supervised losses per task, per row (callers reduce)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def supervised_loss(logits: torch.Tensor, targets: torch.Tensor, task: str) -> torch.Tensor:
    """Per-row loss: cross-entropy (multiclass, integer or soft targets) or mean binary cross-entropy (multilabel)."""
    if task == "multilabel":
        return F.binary_cross_entropy_with_logits(logits, targets.float(), reduction="none").mean(1)
    return F.cross_entropy(logits, targets, reduction="none")


def labels_tensor(labels, device: torch.device | str, task: str) -> torch.Tensor:
    """Numpy labels to a tensor of the dtype the loss expects (int64 classes or float32 multi-label targets)."""
    tensor = torch.as_tensor(labels)
    return tensor.to(device, torch.float32 if task == "multilabel" else torch.int64)
