"""Classification metrics on clean labels: accuracy, macro precision / recall / F1, per-class and mean AUC."""

from __future__ import annotations

import warnings

import numpy as np
import torch
from sklearn.metrics import accuracy_score, precision_recall_fscore_support, roc_auc_score

from compressor.training.batches import iterate_inputs


@torch.no_grad()
def predict_logits(
    model: torch.nn.Module, images: torch.Tensor, device: torch.device | str, batch_size: int = 512,
    window: tuple[float, float] | None = None,
) -> np.ndarray:
    """Logits of ``model`` (in eval mode) on integer pixels through the data set's ``window`` (``split.window``;
    None: the pixel type's range), as a float32 numpy array."""
    model.eval()
    if len(images) == 0:
        return np.zeros((0, 0), dtype=np.float32)
    chunks = [model(x).float().cpu() for x in iterate_inputs(images, batch_size, device, window)]
    return torch.cat(chunks).numpy()


def probabilities(logits: np.ndarray, task: str) -> np.ndarray:
    """Softmax (multiclass) or sigmoid (multilabel) of ``logits``."""
    t = torch.from_numpy(np.asarray(logits, dtype=np.float32))
    return (torch.sigmoid(t) if task == "multilabel" else torch.softmax(t, dim=1)).numpy()


def _auc_per_class(labels_onehot: np.ndarray, scores: np.ndarray) -> list[float | None]:
    """ROC AUC of each class (one-vs-rest); None where the class has only one label value in the data."""
    out: list[float | None] = []
    for c in range(scores.shape[1]):
        column = labels_onehot[:, c]
        if column.min() == column.max():
            out.append(None)
            continue
        out.append(float(roc_auc_score(column, scores[:, c])))
    return out


def classification_metrics(logits: np.ndarray, labels: np.ndarray, task: str, threshold: float = 0.5) -> dict:
    """Metrics of ``logits`` against clean ``labels``.

    Multiclass: accuracy, macro precision / recall / F1, one-vs-rest AUC per class and their mean.
    Multilabel: exact-match accuracy, mean per-label accuracy, macro precision / recall / F1 at ``threshold``,
    AUC per label and their mean.
    """
    probs = probabilities(logits, task)
    num_classes = probs.shape[1]
    if task == "multilabel":
        truth = labels.astype(int)
        pred = (probs >= threshold).astype(int)
        accuracy = float((pred == truth).all(axis=1).mean())
        extra = {"label_accuracy": float((pred == truth).mean()), "threshold": threshold}
        onehot = truth
    else:
        truth = labels.astype(int)
        pred = probs.argmax(axis=1)
        accuracy = float(accuracy_score(truth, pred))
        extra = {}
        onehot = np.eye(num_classes, dtype=int)[truth]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        precision, recall, f1, _ = precision_recall_fscore_support(
            truth, pred, average="macro", zero_division=0, labels=None if task == "multilabel" else range(num_classes)
        )
    auc = _auc_per_class(onehot, probs)
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
