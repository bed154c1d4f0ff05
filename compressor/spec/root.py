"""The whole pipeline spec."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from compressor.spec.base import Section
from compressor.spec.consistency import check_methods
from compressor.spec.data import DataSpec, NoiseSpec, SubsetSpec
from compressor.spec.export import ExportSpec
from compressor.spec.methods import MethodSpec
from compressor.spec.presets import expand_preset
from compressor.spec.robustness import RobustnessSpec
from compressor.spec.training import DistillSpec, StudentSpec, TeachersSpec

MAX_SEED = 2**31 - 1  # numpy, torch and scikit-learn take it (scikit-learn stops at 2**32 - 1; seed + 1 is used)


class Spec(Section):
    """``compressor run`` spec: data -> teachers -> distillation -> certification -> export."""

    name: str = "run"
    seed: int = Field(0, ge=0, le=MAX_SEED, description="drives every random choice of the run")
    output_dir: Path = Field(Path("runs/default"), strict=False, description="run directory (overridden by --out)")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    method: MethodSpec = Field(default_factory=MethodSpec)
    data: DataSpec = Field(default_factory=DataSpec)
    noise: NoiseSpec = Field(default_factory=NoiseSpec)
    subsets: SubsetSpec = Field(default_factory=SubsetSpec)
    teachers: TeachersSpec = Field(default_factory=TeachersSpec)
    student: StudentSpec = Field(default_factory=StudentSpec)
    distillation: DistillSpec = Field(default_factory=DistillSpec)
    robustness: RobustnessSpec = Field(default_factory=RobustnessSpec)
    export: ExportSpec = Field(default_factory=ExportSpec)

    @model_validator(mode="before")
    @classmethod
    def _apply_preset(cls, raw: object) -> object:
        return expand_preset(raw)

    @model_validator(mode="after")
    def _cross_checks(self) -> Spec:
        self._count_from_models()
        check_methods(self)
        if self.distillation.weighting == "single" and self.distillation.single_teacher >= self.subsets.count:
            raise ValueError(
                f"distillation.single_teacher={self.distillation.single_teacher} but there are only "
                f"{self.subsets.count} teachers (subsets.count)"
            )
        return self

    def _count_from_models(self) -> None:
        """``subsets.count`` = ``len(teachers.models)`` when teachers are listed (an explicit other count is an
        error), and the listed teachers' needs that other sections must meet."""
        models = self.teachers.models
        if not models:
            return
        if not self.distillation.uses_teachers:
            raise ValueError("teachers.models lists teachers but distillation.alpha is 0 (no teacher is used); "
                             "set alpha > 0 or remove teachers.models")
        if "count" in self.subsets.model_fields_set and self.subsets.count != len(models):
            raise ValueError(f"subsets.count is {self.subsets.count} but teachers.models lists {len(models)} "
                             "teachers (one subset per teacher); remove subsets.count or make them agree")
        onnx = [str(m.path) for m in models if m.is_onnx]
        if onnx and self.distillation.teacher_noise.fickle:
            raise ValueError(f"distillation.teacher_noise.fickle needs teachers with dropout, but {onnx[0]} is an "
                             "ONNX teacher (run as it is, without dropout)")
        self.subsets.count = len(models)

    def teacher_archs(self) -> list[str]:
        """Architecture of each of the ``subsets.count`` teachers (``teachers.archs`` cycled)."""
        archs = self.teachers.archs
        return [archs[i % len(archs)] for i in range(self.subsets.count)]
