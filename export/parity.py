"""Parity of an exported ONNX model with its PyTorch source, measured in onnxruntime on real test images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from .evaluate import accuracy, agreement


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
    window: tuple[float, float] | None = None,
) -> dict:
    """Compare ONNX and PyTorch logits on integer pixels; ``passed`` is False past ``atol`` or below agreement.

    Args:
        images: ``[N, C, H, W]`` pixels (a tensor, or a store read whole).
        labels: the images' labels, or None (e.g. random probe images) to skip the accuracies.
        window: the data set's pixel window (None: the pixel type's range).

    Returns:
        ``max_abs_diff``, ``agreement`` (argmax, or thresholded labels in multi-label tasks), both accuracies
        against ``labels`` (None without labels), ``samples`` and ``passed``.
    """
    from compressor.data.normalize import to_model_input

    x = to_model_input(images[:], window, "cpu")
    with torch.no_grad():
        reference = torch.cat([model.cpu().eval()(x[i : i + 256]) for i in range(0, len(x), 256)]).numpy()
    logits = onnx_logits(path, x.numpy())
    max_diff = float(np.abs(logits - reference).max()) if logits.size else 0.0
    agree = agreement(logits, reference, task)
    return {
        "samples": int(len(x)),
        "max_abs_diff": max_diff,
        "agreement": agree,
        "accuracy_torch": None if labels is None else accuracy(reference, labels, task),
        "accuracy_onnx": None if labels is None else accuracy(logits, labels, task),
        "atol": atol,
        "min_agreement": min_agreement,
        "passed": bool(max_diff <= atol and agree >= min_agreement),
    }
