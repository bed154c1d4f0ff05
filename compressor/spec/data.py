"""Spec sections for the data: source, label noise and the teachers' overlapping subsets."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from compressor.spec.base import Section


class DataSpec(Section):
    """Where the images come from and how they are split."""

    source: Literal["digits", "npz", "folder", "csv"] = Field(
        "digits", description="digits (built in), npz (MedMNIST layout), folder (one sub-folder per class), csv"
    )
    path: Path | None = Field(None, strict=False, description="file or folder of the data set (not used by digits)")
    image_size: int | None = Field(None, ge=4, le=1024, description="resize images to this square size")
    channels: Literal[1, 3] | None = Field(None, description="convert images to 1 or 3 channels")
    task: Literal["auto", "multiclass", "multilabel"] = "auto"
    val_fraction: float = Field(0.1, ge=0.0, lt=0.5, description="used where the source has no split")
    test_fraction: float = Field(0.2, gt=0.0, lt=0.5, description="used where the source has no split")
    class_names: list[str] | None = None
    label_issues: Literal["auto", "report", "drop", "relabel"] = Field(
        "auto", description="what distillation does with the training labels the audit flags (data/label_issues.csv):"
        " report (nothing), drop (leave them out), relabel (use the suggested label) or auto (distil with report and"
        " with drop, keep the student with the better validation accuracy; report without a validation split or when"
        " under 1% of the rows are flagged); only distillation re-runs"
    )
    window: Literal["type", "auto"] | tuple[float, float] = Field(
        "type", description="pixel values mapped to 0 and 1: type (uint8 0-255, uint16 0-65535, float 0-1), auto "
        "(the training split's min and max) or [low, high]; one window for the whole data set, never per image"
    )
    load: Literal["auto", "memory", "stream"] = Field(
        "auto", description="memory: read every image into memory; stream: read batches on demand (memory-mapped "
        "arrays, files decoded per batch); auto: memory up to 256 MiB of pixels"
    )
    workers: int = Field(0, ge=0, le=64, description="DataLoader worker processes reading images (0: none)")

    @field_validator("window", mode="before")
    @classmethod
    def _window_list(cls, value: Any) -> Any:
        # YAML writes [low, high] as a list; the strict tuple takes tuples only
        return tuple(value) if isinstance(value, list) else value

    @field_validator("window")
    @classmethod
    def _window_range(cls, value):
        if isinstance(value, tuple) and not value[0] < value[1]:  # (Section refuses non-finite numbers first)
            raise ValueError(f"data.window must be [low, high] with finite low < high, got {list(value)}")
        return value

    @field_validator("class_names")
    @classmethod
    def _distinct_names(cls, value):
        if value is not None and (not value or len(set(value)) != len(value) or any(not v.strip() for v in value)):
            raise ValueError("data.class_names must be distinct, non-empty names")
        return value

    @field_validator("channels", mode="before")
    @classmethod
    def _channels_integer(cls, value: Any) -> Any:
        # Literal compares with ==, so true and 3.0 would pass as 1 and 3.
        if isinstance(value, (bool, float)):
            raise ValueError(f"Input should be 1 or 3 (got {value!r})")
        return value

    @model_validator(mode="after")
    def _path_needed(self) -> DataSpec:
        if self.source != "digits" and self.path is None:
            raise ValueError(f"data.path is required for source {self.source!r}")
        if self.source == "digits" and self.path is not None:
            raise ValueError("data.path is not used by source 'digits' (the built-in data set); remove data.path or "
                             "set data.source to npz, folder or csv")
        return self


class NoiseSpec(Section):
    """Synthetic label noise injected into the training (and validation) labels, for benchmarking."""

    kind: Literal["none", "symmetric", "pairflip", "matrix"] = "none"
    rate: float = Field(0.0, ge=0.0, lt=1.0, description="probability that a label is corrupted")
    matrix: list[list[float]] | None = Field(None, description="C x C row-stochastic transition matrix (kind: matrix)")

    @model_validator(mode="after")
    def _consistent(self) -> NoiseSpec:
        if self.kind == "matrix":
            if self.matrix is None:
                raise ValueError("noise.matrix is required when noise.kind is 'matrix'")
            n = len(self.matrix)
            for i, row in enumerate(self.matrix):
                if len(row) != n:
                    raise ValueError(f"noise.matrix must be square: row {i} has {len(row)} entries, expected {n}")
                if any(v < 0 for v in row) or abs(sum(row) - 1.0) > 1e-6:
                    raise ValueError(f"noise.matrix row {i} must be non-negative and sum to 1, got {row}")
        elif self.matrix is not None:
            raise ValueError("noise.matrix is only used with noise.kind: matrix")
        return self


class SubsetSpec(Section):
    """K overlapping subsets of the training set, one per teacher (RoS-KD); formulas in ``compressor/data/subsets.py``.

    The samples are cut into K disjoint shares, one per teacher. ``random``: each teacher also takes every other
    sample with probability ``overlap``, so every sample is unseen by about ``(1 - overlap)(K - 1)`` teachers.
    ``shared_core``: a core of ``round(overlap * N)`` samples is in every subset, the rest is split into K disjoint
    parts. Either way 0 gives disjoint subsets and 1 gives identical subsets (all of D).
    """

    count: int = Field(3, ge=1, le=64, description="number of subsets = number of teachers")
    overlap: float = Field(0.4, ge=0.0, le=1.0, description="overlap ratio p: random = chance that a teacher takes "
                           "a sample of another's share; shared_core = fraction of the training set in every subset")
    layout: Literal["random", "shared_core"] = Field(
        "random", description="random: own share + each other sample with probability overlap (every sample has "
        "teachers that never saw it); shared_core: a core seen by every teacher + disjoint parts"
    )
