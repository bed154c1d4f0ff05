"""Certify a classifier checkpoint: load it, check it fits the data, evaluate it, record it with its hash."""

from __future__ import annotations

from pathlib import Path

import torch

from compressor.checkpoint import load_classifier
from compressor.io import sha256_file
from compressor.models import count_parameters
from compressor.robustness.evaluate import EvalData, evaluate_model
from compressor.spec.robustness import RobustnessSpec


class CheckpointMismatch(ValueError):
    """The checkpoint does not fit the data it is to be certified on."""


def check_fits(info, data: EvalData, num_classes: int) -> None:
    """Raise ``CheckpointMismatch`` when the model's input shape, class count or task differ from the data's."""
    channels, size = int(data.images.shape[1]), int(data.images.shape[-1])
    problems = []
    if info.in_channels != channels or info.image_size != size:
        problems.append(f"it takes {info.in_channels}x{info.image_size}x{info.image_size} images, "
                        f"the data has {channels}x{size}x{size}")
    if info.num_classes != num_classes:
        problems.append(f"it has {info.num_classes} outputs, the data has {num_classes} classes")
    if info.task != data.task:
        problems.append(f"it is a {info.task} model, the data is {data.task}")
    if problems:
        raise CheckpointMismatch("; ".join(problems))


def certify_checkpoint(name: str, path: str | Path, data: EvalData, num_classes: int, spec: RobustnessSpec, *,
                       seed: int, device: torch.device | str, smoothing: bool, landscape: bool,
                       file_label: str | None = None) -> dict:
    """Evaluate the checkpoint at ``path`` and return its record.

    Args:
        name: model name in the report (e.g. ``student_averaged``, ``teacher_0``).
        path: ``.safetensors`` checkpoint written by ``compressor.checkpoint.save_classifier``.
        data: the evaluation samples (``select_data``).
        num_classes: classes (or labels) of the data.
        spec: the robustness section.
        seed: the spec seed.
        device: where to compute.
        smoothing: run the smoothing certificate for this model.
        landscape: compute its loss landscape.
        file_label: how the file is named in the record (default: ``path`` as given).

    Returns:
        ``{"name", "file", "sha256", "arch", "params", "task", "classes", "results"}``.

    Raises:
        CheckpointMismatch: the checkpoint does not fit the data.
    """
    model, info = load_classifier(path, device)
    check_fits(info, data, num_classes)
    results = evaluate_model(model, data, spec, seed=seed, device=device, name=name, smoothing=smoothing,
                             landscape=landscape)
    return {
        "name": name, "file": file_label or str(path), "sha256": sha256_file(path), "arch": info.arch,
        "params": count_parameters(model), "task": info.task, "classes": info.class_names, "results": results,
    }
