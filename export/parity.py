"""Parity of an exported ONNX model with its PyTorch source, measured in onnxruntime on real test images."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from compressor.task import Task


class UnitInputs:
    """A split's integer pixels as ``float32 [n, C, H, W]`` model inputs in [0, 1], read batch by batch each time it
    is iterated (a store is never read whole; see ``compressor.data.batches.iterate_inputs``).

    Args:
        images: ``[N, C, H, W]`` pixels (a tensor or a store).
        window: the data set's pixel window (None: the pixel type's range).
        batch_size: images per batch.
    """

    def __init__(self, images, window: tuple[float, float] | None = None, batch_size: int = 256):
        self.images, self.window, self.batch_size = images, window, batch_size

    def __len__(self) -> int:
        return len(self.images)

    def __iter__(self) -> Iterator[np.ndarray]:
        from compressor.data.batches import iterate_inputs

        for x in iterate_inputs(self.images, self.batch_size, "cpu", self.window):
            yield x.numpy()


def _batches(images: np.ndarray | Iterable[np.ndarray], batch_size: int) -> Iterator[np.ndarray]:
    if isinstance(images, np.ndarray):
        for i in range(0, len(images), batch_size):
            yield images[i : i + batch_size]
    else:
        yield from images


def onnx_logits(
    path: str | Path, images: np.ndarray | Iterable[np.ndarray], batch_size: int = 256,
    providers: list[str] | None = None,
) -> np.ndarray:
    """Run the ONNX model with onnxruntime on ``float32 [N, C, H, W]`` images in [0, 1]: an array (run in batches of
    ``batch_size``) or batches of them (e.g. ``UnitInputs``)."""
    session = ort.InferenceSession(str(path), providers=providers or ["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    outputs = [session.run(None, {name: np.ascontiguousarray(x)})[0] for x in _batches(images, batch_size)]
    return np.concatenate(outputs) if outputs else np.zeros((0, 0), dtype=np.float32)


def check_parity(
    path: str | Path,
    model: torch.nn.Module,
    images,
    labels: np.ndarray | None,
    task: str,
    *,
    atol: float,
    min_agreement: float,
    window: tuple[float, float] | None = None,
) -> dict:
    """Compare ONNX and PyTorch logits on integer pixels; ``passed`` is False past ``atol`` or below agreement.

    Args:
        images: ``[N, C, H, W]`` pixels (a tensor, or a store read batch by batch).
        labels: the images' labels, or None (e.g. random probe images) to skip the accuracies.
        window: the data set's pixel window (None: the pixel type's range).

    Returns:
        ``max_abs_diff``, ``agreement`` (argmax, or thresholded labels in multi-label tasks), both accuracies
        against ``labels`` (None without labels), ``samples`` and ``passed``.
    """
    inputs = UnitInputs(images, window)
    model = model.cpu().eval()
    with torch.no_grad():
        reference = [model(torch.from_numpy(x)).numpy() for x in inputs]
    reference = np.concatenate(reference) if reference else np.zeros((0, 0), dtype=np.float32)
    logits = onnx_logits(path, inputs)
    max_diff = float(np.abs(logits - reference).max()) if logits.size else 0.0
    task = Task(task)
    agree = task.agreement(logits, reference)
    return {
        "samples": int(len(inputs)),
        "max_abs_diff": max_diff,
        "agreement": agree,
        "accuracy_torch": None if labels is None else task.accuracy(reference, labels),
        "accuracy_onnx": None if labels is None else task.accuracy(logits, labels),
        "atol": atol,
        "min_agreement": min_agreement,
        "passed": bool(max_diff <= atol and agree >= min_agreement),
    }
