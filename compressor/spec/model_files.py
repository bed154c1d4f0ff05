"""Spec fields that point at model files: existing teachers (``teachers.models``) and pretrained starts.

A teacher file is an ONNX model (any framework's, run with onnxruntime) or the weights of a registry architecture
(safetensors, or a PyTorch ``.pth`` / ``.pt`` state dict read with ``torch.load(weights_only=True)``). A pretrained
start is a weights file that initialises a registry architecture before it is trained. Nothing is downloaded.

``normalization`` says what the model expects of its input, given images with pixels in [0, 1]:

=============  =====================================================================================================
``auto``       ONNX: ``none`` (compressor's own exports normalise inside the graph). Weights: the mean/std stored
               in a compressor checkpoint; else ``imagenet`` for a torchvision architecture (ResNet, MobileNet-V2,
               DenseNet) at 64 px and up; else ``data``.
``data``       ``(x - mean) / std`` with the data set's channel statistics (what a model trained by compressor uses)
``imagenet``   ``(x - mean) / std`` with ImageNet's mean and std (averaged over RGB for a single channel)
``none``       ``x`` as is: pixels in [0, 1]
``pixels``     ``255 x``: pixels in [0, 255]
``custom``     ``(x - mean) / std`` with the ``mean`` and ``std`` given (one value, or one per channel; giving them
               implies ``custom``)
=============  =====================================================================================================

The checks that need the files or the data (the file exists and fits the data) run in the teachers stage.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, field_validator, model_validator

from compressor.spec.base import Section
from compressor.spec.model_names import ArchName

ONNX_SUFFIX = ".onnx"
WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt")
MAX_CHANNELS = 64  # mean/std entries: far above any image's channels


def _check_suffix(path: Path, allowed: tuple[str, ...]) -> Path:
    """``path`` when its suffix is one of ``allowed``, else ValueError naming the file type."""
    if path.suffix.lower() not in allowed:
        raise ValueError(f"{path}: unsupported file type {path.suffix or '(no suffix)'!r} "
                         f"(expected {', '.join(allowed)})")
    return path


def path_form(value: Any) -> Any:
    """A bare path (``pretrained: weights.safetensors``) as the mapping ``{path: ...}``."""
    return {"path": value} if isinstance(value, (str, Path)) else value


class InputNormalization(Section):
    """What a model expects of its input, given pixels in [0, 1] (see the module docstring)."""

    normalization: Literal["auto", "data", "imagenet", "none", "pixels", "custom"] = Field(
        "auto", description="auto, data, imagenet, none ([0, 1]), pixels ([0, 255]) or custom (mean and std)"
    )
    mean: list[float] | None = Field(None, min_length=1, max_length=MAX_CHANNELS,
                                     description="custom normalisation: mean per channel on [0, 1] pixels")
    std: list[float] | None = Field(None, min_length=1, max_length=MAX_CHANNELS,
                                    description="custom normalisation: std per channel on [0, 1] pixels")

    @model_validator(mode="after")
    def _custom(self) -> InputNormalization:
        given = self.mean is not None or self.std is not None
        if given and self.normalization not in ("auto", "custom"):
            raise ValueError(f"mean and std are a custom normalisation; they cannot be combined with "
                             f"normalization: {self.normalization}")
        if given and (self.mean is None or self.std is None):
            raise ValueError("a custom normalisation needs both mean and std")
        if self.normalization == "custom" and not given:
            raise ValueError("normalization: custom needs mean and std")
        if self.std is not None and any(s <= 0 for s in self.std):
            raise ValueError(f"std must be positive, got {self.std}")
        if self.mean is not None and self.std is not None and len(self.mean) != len(self.std):
            raise ValueError(f"mean has {len(self.mean)} values but std has {len(self.std)}")
        if given and self.normalization == "auto":
            object.__setattr__(self, "normalization", "custom")  # no re-validation: the pair is already checked
        return self


class PretrainedSpec(InputNormalization):
    """A weights file that initialises a registry architecture before training (``pretrained: path`` for short).

    The weights must fit the architecture except for the classifier head (re-initialised when the class count
    differs), the first convolution's input channels (adapted, see ``compressor.models.pretrained``) and, below
    64 px, a replaced stem (kept freshly initialised).
    """

    path: Path = Field(strict=False, description="safetensors or .pth/.pt state dict (torch.load weights_only)")

    @field_validator("path")
    @classmethod
    def _weights_file(cls, path: Path) -> Path:
        return _check_suffix(path, WEIGHT_SUFFIXES)


class TeacherModelSpec(InputNormalization):
    """An existing teacher: an ONNX model, or the weights of the registry architecture ``arch``.

    Without ``finetune`` the teacher is used as it is; with it, the weights start a teacher that trains further on
    its subset with ``teachers.training`` (ONNX models cannot be fine-tuned). ``arch`` may be left out for a
    checkpoint written by compressor (its metadata names the architecture).
    """

    path: Path = Field(strict=False, description="teacher.onnx, or a weights file (.safetensors, .pth, .pt)")
    arch: ArchName | None = Field(None, description="registry architecture of a weights file")
    finetune: bool = Field(False, description="train the weights further on the teacher's subset")
    output: Literal["logits", "probabilities"] = Field(
        "logits", description="ONNX: what the model outputs (probabilities are turned into log-probabilities)"
    )

    @model_validator(mode="after")
    def _consistent(self) -> TeacherModelSpec:
        _check_suffix(self.path, (ONNX_SUFFIX, *WEIGHT_SUFFIXES))
        if self.is_onnx:
            if self.arch is not None:
                raise ValueError(f"{self.path}: arch is for weights files; an ONNX file carries its own graph")
            if self.finetune:
                raise ValueError(f"{self.path}: an ONNX teacher cannot be fine-tuned (give the weights of a "
                                 "registry architecture with arch to fine-tune)")
        elif self.output != "logits":
            raise ValueError(f"{self.path}: output applies to ONNX teachers; a registry architecture outputs logits")
        elif self.arch is None and self.path.suffix.lower() != ".safetensors":
            raise ValueError(f"{self.path}: a state dict needs arch (the registry architecture it belongs to)")
        return self

    @property
    def is_onnx(self) -> bool:
        """Whether the teacher is an ONNX model."""
        return self.path.suffix.lower() == ONNX_SUFFIX


# Spec fields holding a model file: a bare path is read as ``{path: ...}`` (``path_form``).
PretrainedFile = Annotated[PretrainedSpec, BeforeValidator(path_form)]
TeacherFile = Annotated[TeacherModelSpec, BeforeValidator(path_form)]
