"""Parity of an exported ONNX model with its PyTorch source, measured in onnxruntime on real test images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from compressor.task import Task


def onnx_logits(
    path: str | Path, images: np.ndarray, batch_size: int = 256, providers: list[str] | None = None
) -> np.ndarray:
    """Run the ONNX model on ``float32 [N, C, H, W]`` images in [0, 1] with onnxruntime, in batches."""
    session = ort.InferenceSession(str(path), providers=providers or ["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    outputs = [session.run(None, {name: images[i : i + batch_size]})[0] for i in range(0, len(images), batch_size)]
    return np.concatenate(outputs) if outputs else np.zeros((0, 0), dtype=np.float32)


def check_parity(
    path: str | Path,
    model: torch.nn.Module,
    images: torch.Tensor,
    labels: np.ndarray | None,
    task: str,
    *,
    atol: float,
    min_agreement: float,
) -> dict:
    """Compare ONNX and PyTorch logits on ``uint8`` images; ``passed`` is False past ``atol`` or below agreement.

    Args:
        labels: the images' labels, or None (e.g. random probe images) to skip the accuracies.

    Returns:
        ``max_abs_diff``, ``agreement`` (argmax, or thresholded labels in multi-label tasks), both accuracies
        against ``labels`` (None without labels), ``samples`` and ``passed``.
    """
    x = images.float().div(255.0)
    with torch.no_grad():
        reference = torch.cat([model.cpu().eval()(x[i : i + 256]) for i in range(0, len(x), 256)]).numpy()
    logits = onnx_logits(path, x.numpy())
    max_diff = float(np.abs(logits - reference).max()) if logits.size else 0.0
    task = Task(task)
    agree = task.agreement(logits, reference)
    return {
        "samples": int(len(x)),
        "max_abs_diff": max_diff,
        "agreement": agree,
        "accuracy_torch": None if labels is None else task.accuracy(reference, labels),
        "accuracy_onnx": None if labels is None else task.accuracy(logits, labels),
        "atol": atol,
        "min_agreement": min_agreement,
        "passed": bool(max_diff <= atol and agree >= min_agreement),
    }
