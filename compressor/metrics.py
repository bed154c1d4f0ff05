"""Classification metrics on clean labels: accuracy, macro precision / recall / F1, per-class and mean AUC, and
per-group and worst-group accuracy (GroupDistil's evaluation) where the data has group labels; and the fit figures
(supervised loss and accuracy against the labels as given) that validation and model selection use.

Every evaluation of a model on a split goes through ``predict_logits``."""

from __future__ import annotations

import warnings

import numpy as np
import torch
from sklearn.metrics import accuracy_score, precision_recall_fscore_support, roc_auc_score

from compressor.data.batches import iterate_inputs
from compressor.data.stores import ImageStore, take
from compressor.data.types import Split
from compressor.task import Task


@torch.no_grad()
def predict_logits(model: torch.nn.Module, images: ImageStore, device: torch.device | str,
                   window: tuple[float, float] | None = None) -> np.ndarray:
    """Logits of ``model`` (in eval mode) on integer pixels through the data set's ``window`` (``split.window``;
    None: the pixel type's range), as a float32 numpy array."""
    model.eval()
    if len(images) == 0:
        return np.zeros((0, 0), dtype=np.float32)
    chunks = [model(x).float().cpu() for x in iterate_inputs(images, 512, device, window)]  # 512 rows a pass
    return torch.cat(chunks).numpy()


def classification_metrics(logits: np.ndarray, labels: np.ndarray, task: Task, threshold: float = 0.5) -> dict:
    """Metrics of ``logits`` against clean ``labels``.

    Multiclass: accuracy, macro precision / recall / F1, one-vs-rest AUC per class and their mean.
    Multilabel: exact-match accuracy, mean per-label accuracy, macro precision / recall / F1 at ``threshold``,
    AUC per label and their mean.
    """
    probs = task.probabilities(logits)
    num_classes = probs.shape[1]
    truth = labels.astype(int)
    if task.multilabel:
        pred = (probs >= threshold).astype(int)
        accuracy = float((pred == truth).all(axis=1).mean())
        extra = {"label_accuracy": float((pred == truth).mean()), "threshold": threshold}
        onehot = truth
    else:
        pred = probs.argmax(axis=1)
        accuracy = float(accuracy_score(truth, pred))
        extra = {}
        onehot = np.eye(num_classes, dtype=int)[truth]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        precision, recall, f1, _ = precision_recall_fscore_support(
            truth, pred, average="macro", zero_division=0, labels=None if task.multilabel else range(num_classes)
        )
    # ROC AUC of each class (one-vs-rest); None where the class has only one label value in the data.
    auc = [None if column.min() == column.max() else float(roc_auc_score(column, score))
           for column, score in zip(onehot.T, probs.T, strict=True)]
    defined = [a for a in auc if a is not None]
    return {
        "accuracy": accuracy,
        "precision": float(precision),
        "recall": float(recall),
        "f1": float(f1),
        "auc": float(np.mean(defined)) if defined else None,
        "auc_per_class": auc,
        "samples": int(len(truth)),
        **extra,
    }


def group_accuracy(logits: np.ndarray, labels: np.ndarray, groups: np.ndarray, task: Task,
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
    probs = task.probabilities(logits)
    if task.multilabel:
        correct = ((probs >= threshold).astype(int) == labels.astype(int)).all(axis=1)
    else:
        correct = probs.argmax(axis=1) == labels.astype(int)
    accuracy, samples = {}, {}
    for group in np.unique(groups):
        mask = groups == group
        accuracy[str(int(group))] = float(correct[mask].mean())
        samples[str(int(group))] = int(mask.sum())
    return {"group_accuracy": accuracy, "group_samples": samples, "worst_group_accuracy": min(accuracy.values())}


def split_metrics(model: torch.nn.Module, split: Split, task: Task, device: torch.device | str) -> dict:
    """``classification_metrics`` of ``model`` on ``split``, plus group accuracies where the split has groups."""
    logits = predict_logits(model, split.images, device, window=split.window)
    metrics = classification_metrics(logits, split.labels, task)
    if split.groups is not None:
        metrics.update(group_accuracy(logits, split.labels, split.groups, task))
    return metrics


def fit_sums(model: torch.nn.Module, split: Split, task: Task, device: torch.device | str, start: int = 0,
             stop: int | None = None) -> tuple[float, float, int]:
    """Sums over the rows ``start:stop`` of ``split`` of the supervised loss and the fit accuracy, and the row count.

    The loss is the task's per-row loss (cross-entropy, or binary cross-entropy averaged over the labels) against
    the labels as given (noisy ones included); the accuracy is ``Task.fit_accuracy`` (top-1, or per label), the
    training history's accuracy. Sums (not means) so that slices evaluated by different ranks add up exactly.
    """
    labels = split.labels[start:stop]
    if len(labels) == 0:
        return 0.0, 0.0, 0
    stop = len(split.images) if stop is None else min(stop, len(split.images))
    images = split.images
    if (start, stop) != (0, len(images)):  # a store's rows stay a view, read batch by batch by predict_logits
        images = take(images, np.arange(start, stop, dtype=np.int64))
    logits = torch.from_numpy(predict_logits(model, images, device, window=split.window))
    targets = task.labels_tensor(labels, "cpu")
    rows = len(labels)
    loss = float(task.loss(logits, targets).double().sum())
    return loss, task.fit_accuracy(logits, targets) * rows, rows


def fit_figures(model: torch.nn.Module, split: Split, task: Task, device: torch.device | str) -> dict:
    """``{"loss", "accuracy", "samples"}`` of ``model`` on ``split`` against its labels as given (``fit_sums``).

    Raises:
        ValueError: the split is empty.
    """
    loss, correct, rows = fit_sums(model, split, task, device)
    if rows == 0:
        raise ValueError("fit_figures: the split has no samples")
    return {"loss": loss / rows, "accuracy": correct / rows, "samples": rows}
