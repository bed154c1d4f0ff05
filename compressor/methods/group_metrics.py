"""Per-group and worst-group accuracy (GroupDistil's evaluation), added to a model's test metrics."""

from __future__ import annotations

import numpy as np
import torch

from compressor.data.types import Split
from compressor.metrics import classification_metrics, predict_logits, probabilities


def group_accuracy(logits: np.ndarray, labels: np.ndarray, groups: np.ndarray, task: str,
                   threshold: float = 0.5) -> dict:
    """Accuracy of ``logits`` on each group present in ``groups`` and the worst of them.

    Multiclass accuracy is argmax agreement; multi-label accuracy is exact match of the thresholded labels.

    Returns:
        ``{"group_accuracy": {group: acc}, "group_samples": {group: n}, "worst_group_accuracy": min_acc}`` (group
        ids as strings, so the dict is JSON-ready); an empty dict when there are no samples.
    """
    groups = np.asarray(groups).reshape(-1)
    if len(groups) != len(labels):
        raise ValueError(f"group_accuracy: {len(groups)} group labels for {len(labels)} samples")
    if len(groups) == 0:
        return {}
    probs = probabilities(logits, task)
    if task == "multilabel":
        correct = ((probs >= threshold).astype(int) == labels.astype(int)).all(axis=1)
    else:
        correct = probs.argmax(axis=1) == labels.astype(int)
    accuracy, samples = {}, {}
    for group in np.unique(groups):
        mask = groups == group
        accuracy[str(int(group))] = float(correct[mask].mean())
        samples[str(int(group))] = int(mask.sum())
    return {"group_accuracy": accuracy, "group_samples": samples, "worst_group_accuracy": min(accuracy.values())}


def split_metrics(model: torch.nn.Module, split: Split, task: str, device: torch.device | str) -> dict:
    """``classification_metrics`` of ``model`` on ``split``, plus group accuracies where the split has groups."""
    logits = predict_logits(model, split.images, device, window=split.window)
    metrics = classification_metrics(logits, split.labels, task)
    if split.groups is not None:
        metrics.update(group_accuracy(logits, split.labels, split.groups, task))
    return metrics
