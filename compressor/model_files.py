"""Models from the files a spec names: existing teachers (ONNX or registry weights) and pretrained starts.

``registry_from_file`` builds a registry architecture for the run's data and loads a weights file into it, exactly
(an existing teacher) or as a pretrained start (head, input channels and stem may differ:
``compressor.models.pretrained``). Its input normalisation is chosen by the spec's ``normalization``
(``compressor.spec.model_files``) and kept inside the model (``NormalizedClassifier``), so the model takes [0, 1]
pixels like every other model of the run. ``onnx_from_file`` opens an ONNX teacher and checks it against the data.
``load_teacher`` reads back a teacher the teachers stage wrote (a compressor checkpoint or an ONNX file).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch
from safetensors import SafetensorError

from compressor.checkpoint import ModelInfo, load_classifier, read_info
from compressor.models import NormalizedClassifier
from compressor.models.normalization import named_statistics, per_channel
from compressor.models.onnx_teacher import OnnxTeacher, is_compressor_export
from compressor.models.pretrained import load_exact, load_pretrained
from compressor.models.torchvision_models import keeps_imagenet_stem
from compressor.models.weight_files import ModelFileError, one_line, read_state_dict, split_classifier_state
from compressor.spec.model_files import InputNormalization, TeacherModelSpec

# A probe batch run through an ONNX teacher before it is used: shapes and finiteness are checked on it.
PROBE_ROWS = 4


def stored_info(path: Path) -> ModelInfo | None:
    """The ``ModelInfo`` of a compressor checkpoint (None for any other file)."""
    if path.suffix.lower() != ".safetensors" or not path.is_file():
        return None
    try:
        return read_info(path)
    except (ValueError, OSError, SafetensorError):
        return None


def weights_arch(path: Path, arch: str | None) -> str:
    """The registry architecture of a weights file: ``arch`` when given, else the one its compressor metadata names.

    Raises:
        ModelFileError: no ``arch`` and the file is not a compressor checkpoint, or ``arch`` contradicts it.
    """
    info = stored_info(path)
    if arch is None:
        if info is None:
            if not path.is_file():
                raise ModelFileError(f"{path}: weights file not found")
            raise ModelFileError(f"{path}: not a compressor checkpoint (no architecture in its metadata); "
                                 "give its registry architecture with arch")
        return info.arch
    if info is not None and info.arch != arch:
        raise ModelFileError(f"{path}: holds a {info.arch} checkpoint, not {arch} (fix arch or leave it out)")
    return arch


def chosen_statistics(choice: InputNormalization, info: ModelInfo, stored: tuple | None, onnx: bool = False,
                      source: str = "") -> tuple[list[float], list[float], str]:
    """``(mean, std, what)``: the input normalisation ``choice`` resolves to for a model of ``info``'s data.

    ``auto``: an ONNX model takes [0, 1] pixels (``none``); weights use the statistics stored with them, else
    ImageNet's for a torchvision architecture with its ImageNet stem (64 px and up), else the data's.

    Raises:
        ModelFileError: a custom mean/std with neither one value nor one per channel.
    """
    channels, name = info.in_channels, choice.normalization
    if name == "custom":
        try:
            mean = per_channel(choice.mean, channels, "normalization mean")
            std = per_channel(choice.std, channels, "normalization std")
        except ValueError as exc:
            raise ModelFileError(f"{source}: {exc}") from None
        return mean, std, "custom"
    if name == "auto":
        if onnx:
            name = "none"
        elif stored is not None and len(stored[0]) in (1, channels):
            return per_channel(stored[0], channels, "mean"), per_channel(stored[1], channels, "std"), "stored"
        else:
            name = "imagenet" if keeps_imagenet_stem(info.arch, info.image_size) else "data"
    mean, std = named_statistics(name, channels, info.mean, info.std)
    return mean, std, name


def registry_from_file(info: ModelInfo, choice: TeacherModelSpec | InputNormalization, path: Path, *,
                       exact: bool) -> tuple[NormalizedClassifier, ModelInfo, list[str]]:
    """A registry model of ``info`` (architecture and data) initialised from the weights file ``path``.

    Args:
        info: the model to build (architecture, the data's channels, size, classes and statistics).
        choice: the spec entry (its ``normalization``, ``mean``, ``std``).
        path: the weights file.
        exact: every tensor must fit (an existing teacher); otherwise a pretrained start.

    Returns:
        The model (CPU, training mode), its info with the chosen normalisation, and notes for the log.

    Raises:
        ModelFileError: the file is missing, unreadable or does not fit (one line naming the file).
    """
    state, stored = split_classifier_state(read_state_dict(path))
    mean, std, how = chosen_statistics(choice, info, stored, source=str(path))
    info = replace(info, mean=mean, std=std)
    model = info.build()
    size = info.image_size  # what the weights must fit, e.g. "resnet18 for 1x64x64 images with 2 outputs":
    fits = f"{info.arch} for {info.in_channels}x{size}x{size} images with {info.num_classes} outputs"
    load = load_exact if exact else load_pretrained
    notes = load(model.backbone, state, str(path), fits) or []
    return model, info, [f"input normalisation: {how}", *notes]


def onnx_from_file(entry: TeacherModelSpec, info: ModelInfo, probe: torch.Tensor) -> tuple[OnnxTeacher, dict]:
    """The ONNX teacher of ``entry`` checked against the data of ``info``, and the settings to store with it.

    Args:
        entry: the spec entry (path, normalization, output).
        info: the data's channels, image size, classes, statistics and task (``arch`` is not used).
        probe: a few of the data's images (float, [0, 1]) the model must turn into ``[N, classes]`` finite outputs.

    Raises:
        ModelFileError: the file is missing or not ONNX, its inputs/outputs are not one image tensor in and one
            ``[N, classes]`` tensor out, or its sizes, task or classes differ from the data's.
    """
    path = entry.path
    mean, std, how = chosen_statistics(entry, info, None, onnx=True, source=str(path))
    teacher = OnnxTeacher(path, mean, std, entry.output, info.task)  # opens and checks the graph's inputs and outputs
    props = teacher.metadata()
    export = is_compressor_export(props)
    if export and props["task"] != info.task:
        raise ModelFileError(f"{path}: a {props['task']} model, the data is {info.task}")
    teacher.check_fits(info.in_channels, info.image_size, info.num_classes)
    settings = {"mean": mean, "std": std, "normalization": how, "output": entry.output, "task": str(info.task),
                "compressor_export": export}
    try:
        out = teacher(probe[:PROBE_ROWS])
    except Exception as exc:  # onnxruntime's own exception types: the graph cannot run on the data's images
        raise ModelFileError(f"{path}: onnxruntime cannot run the model on the data's {info.in_channels}x"
                             f"{info.image_size}x{info.image_size} images ({one_line(exc)})") from None
    rows = min(len(probe), PROBE_ROWS)
    if tuple(out.shape) != (rows, info.num_classes):
        raise ModelFileError(f"{path}: the model outputs {list(out.shape)} for {rows} images; the data has "
                             f"{info.num_classes} classes, so a teacher must output [{rows}, {info.num_classes}]")
    if not torch.isfinite(out).all():
        raise ModelFileError(f"{path}: the model outputs non-finite values on the data's images")
    return teacher, settings


def looks_like_probabilities(logits: torch.Tensor) -> bool:
    """Whether every output row lies in [0, 1] and sums to 1 (a softmax output taken for logits)."""
    return bool(((logits >= 0) & (logits <= 1)).all() and torch.allclose(logits.sum(1), torch.ones(len(logits)),
                                                                          atol=1e-3))


def load_teacher(path: str | Path, device: torch.device | str = "cpu") -> torch.nn.Module:
    """A teacher written by the teachers stage (compressor checkpoint or ONNX file), in eval mode on ``device``."""
    path = Path(path)
    if path.suffix.lower() == ".onnx":
        return OnnxTeacher.from_file(path).to(device).eval()
    return load_classifier(path, device)[0]
