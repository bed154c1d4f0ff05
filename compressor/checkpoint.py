"""Classifier checkpoints in safetensors (no pickle), with everything needed to rebuild the model."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save

from compressor.io import atomic_path
from compressor.models import NormalizedClassifier, build_classifier
from compressor.task import Task


class CheckpointError(ValueError):
    """A file is not a complete compressor checkpoint (the message names it): bad input, exit status 2."""


@dataclass
class ModelInfo:
    """How to rebuild a classifier: architecture, input and output sizes, normalisation, task, class names, and the
    pixel type and window its [0, 1] input was made with."""

    arch: str
    in_channels: int
    num_classes: int
    image_size: int
    mean: list[float]
    std: list[float]
    task: Task = Task.MULTICLASS
    class_names: list[str] = field(default_factory=list)
    dropout: float = 0.0
    pixel_format: dict | None = None  # {"dtype", "window"} of the training pixels (None: uint8, 0..255)

    def __post_init__(self) -> None:
        self.task = Task(self.task)  # read back from JSON metadata as its name

    def build(self) -> NormalizedClassifier:
        """A freshly initialised classifier of this shape."""
        return build_classifier(
            self.arch, self.in_channels, self.num_classes, self.image_size, self.mean, self.std, self.dropout
        )


def save_classifier(model: torch.nn.Module, info: ModelInfo, path: str | Path, extra: dict | None = None) -> None:
    """Atomically write the model's state dict and ``info`` (as safetensors metadata) to ``path``."""
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}
    metadata = {"compressor.model_info": json.dumps(asdict(info))}
    if extra:
        metadata["compressor.extra"] = json.dumps(extra)
    with atomic_path(path) as tmp:
        tmp.write_bytes(canonical_safetensors(save(tensors, metadata=metadata)))


def canonical_safetensors(blob: bytes) -> bytes:
    """The same safetensors file with its JSON header's keys sorted, so equal tensors and metadata give equal bytes.

    safetensors keeps the metadata in a hash map whose order changes from run to run; the layout is an 8-byte
    little-endian header length, the JSON header (padded with spaces to a multiple of 8 bytes) and the tensor data,
    whose offsets are relative to the data and so do not move when the header is rewritten.
    """
    size = int.from_bytes(blob[:8], "little")
    header = json.loads(blob[8 : 8 + size])
    text = json.dumps(header, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    text += b" " * (-len(text) % 8)
    return len(text).to_bytes(8, "little") + text + blob[8 + size :]


def read_info(path: str | Path) -> ModelInfo:
    """The ``ModelInfo`` stored in a checkpoint, without loading its tensors.

    Raises:
        OSError: the file cannot be opened.
        CheckpointError: the file is not a safetensors file, or not one written by compressor (the message names
            it).
    """
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
    except SafetensorError as exc:  # not a safetensors file (truncated, or something else)
        raise CheckpointError(f"{path}: not a compressor checkpoint ({exc})") from exc
    if "compressor.model_info" not in metadata:
        raise CheckpointError(f"{path}: not a compressor checkpoint (no model info in its metadata)")
    return ModelInfo(**json.loads(metadata["compressor.model_info"]))


def load_classifier(path: str | Path, device: str | torch.device = "cpu") -> tuple[NormalizedClassifier, ModelInfo]:
    """Rebuild the classifier stored at ``path`` (strict state-dict load), in eval mode on ``device``.

    Raises:
        OSError: the file cannot be opened.
        CheckpointError: the file is not a complete compressor checkpoint (truncated, or tensors that do not fit the
            architecture its metadata names); the message names the file.
    """
    info = read_info(path)
    model = info.build()
    try:
        model.load_state_dict(load_file(str(path)), strict=True)
    except (SafetensorError, RuntimeError) as exc:  # truncated data, or tensors of another shape or name
        raise CheckpointError(f"{path}: not a complete compressor checkpoint ({str(exc).splitlines()[0]})") from None
    return model.to(device).eval(), info
