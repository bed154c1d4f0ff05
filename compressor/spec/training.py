"""Spec sections for training: optimiser, schedule, augmentation, teachers, student and distillation."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from compressor.spec.base import Section


def _check_arch(name: str) -> str:
    from compressor.models.registry import list_models, unknown_model_message

    if name not in list_models():
        raise ValueError(unknown_model_message(name))
    return name


class OptimizerSpec(Section):
    """Optimiser settings (RoS-KD paper: SGD lr 0.1, momentum 0.9, weight decay 2e-4)."""

    name: Literal["sgd", "adam", "adamw"] = "sgd"
    lr: float = Field(0.1, gt=0.0)
    momentum: float = Field(0.9, ge=0.0, lt=1.0)
    weight_decay: float = Field(2e-4, ge=0.0)
    nesterov: bool = False


class ScheduleSpec(Section):
    """Learning-rate schedule, stepped once per epoch (paper: /10 at epochs 25 and 40 of 50)."""

    name: Literal["constant", "multistep", "cosine"] = "multistep"
    milestones: list[int] = Field(default_factory=list, description="epochs at which lr is multiplied by gamma")
    gamma: float = Field(0.1, gt=0.0, le=1.0)
    warmup_epochs: int = Field(0, ge=0, description="linear warm-up epochs before the schedule")


class AugmentSpec(Section):
    """Batch augmentation on the training images."""

    hflip: bool = False
    crop_padding: int = Field(0, ge=0, description="random crop after zero padding by this many pixels")


class TrainSpec(Section):
    """One training run: epochs, batch size, optimiser, schedule, augmentation."""

    epochs: int = Field(10, ge=1)
    batch_size: int = Field(64, ge=1)
    optimizer: OptimizerSpec = Field(default_factory=OptimizerSpec)
    schedule: ScheduleSpec = Field(default_factory=ScheduleSpec)
    augment: AugmentSpec = Field(default_factory=AugmentSpec)

    @model_validator(mode="after")
    def _milestones_in_range(self) -> TrainSpec:
        bad = [m for m in self.schedule.milestones if not 0 < m < self.epochs]
        if bad:
            raise ValueError(f"schedule.milestones {bad} must lie strictly between 0 and epochs={self.epochs}")
        return self


class TeachersSpec(Section):
    """The K teachers: architectures (cycled over the subsets) and their training."""

    archs: list[str] = Field(default_factory=lambda: ["small_cnn"], min_length=1)
    training: TrainSpec = Field(default_factory=TrainSpec)
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="dropout rate in the teachers' classifier head")

    @field_validator("archs")
    @classmethod
    def _known_archs(cls, archs: list[str]) -> list[str]:
        return [_check_arch(a) for a in archs]


class StudentSpec(Section):
    """The compact student."""

    arch: str = "small_cnn"
    dropout: float = Field(0.0, ge=0.0, lt=1.0)

    @field_validator("arch")
    @classmethod
    def _known_arch(cls, arch: str) -> str:
        return _check_arch(arch)


class AveragingSpec(Section):
    """Smooth parameter averaging of the student (RoS-KD Eq. 1) or an exponential moving average."""

    enabled: bool = True
    mode: Literal["mean", "ema"] = "mean"
    warmup_epochs: int = Field(10, ge=0, description="epochs before the first checkpoint enters the average")
    decay: float = Field(0.99, gt=0.0, lt=1.0, description="EMA decay per epoch (mode: ema)")
    recompute_batchnorm: bool = Field(True, description="recompute batch-norm statistics of the averaged model")


class DistillSpec(Section):
    """Multi-teacher distillation of the student (RoS-KD Eq. 4)."""

    training: TrainSpec = Field(default_factory=TrainSpec)
    alpha: float = Field(0.9, ge=0.0, le=1.0, description="weight of the KD term; 1 - alpha weighs the CE term")
    temperature: float = Field(4.0, gt=0.0)
    weighting: Literal["equal", "exponential", "single"] = Field(
        "exponential", description="teacher weights: equal, drawn from Exp(1) each batch, or a single teacher"
    )
    single_teacher: int = Field(0, ge=0, description="index of the teacher used when weighting is 'single'")
    averaging: AveragingSpec = Field(default_factory=AveragingSpec)
