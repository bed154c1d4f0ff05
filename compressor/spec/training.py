"""Spec sections for training: optimiser, schedule, augmentation, teachers, student and distillation."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from compressor.spec.base import MAX_BATCH, Section
from compressor.spec.methods import (
    GateSpec,
    GroupDROSpec,
    MessySpec,
    MutualSpec,
    SoftRandomizationSpec,
    TargetSpec,
    TeacherNoiseSpec,
)
from compressor.spec.model_files import PretrainedSpec, TeacherModelSpec, path_form
from compressor.spec.model_names import check_arch

MAX_EPOCHS = 100_000


class OptimizerSpec(Section):
    """Optimiser settings (RoS-KD paper: SGD lr 0.1, momentum 0.9, weight decay 2e-4)."""

    name: Literal["sgd", "adam", "adamw"] = "sgd"
    lr: float = Field(0.1, gt=0.0, le=10.0)
    momentum: float = Field(0.9, ge=0.0, lt=1.0)
    weight_decay: float = Field(2e-4, ge=0.0, le=1.0)
    nesterov: bool = False


class ScheduleSpec(Section):
    """Learning-rate schedule, stepped once per epoch (paper: /10 at epochs 25 and 40 of 50)."""

    name: Literal["constant", "multistep", "cosine"] = "multistep"
    milestones: list[int] = Field(default_factory=list, description="epochs at which lr is multiplied by gamma")
    gamma: float = Field(0.1, gt=0.0, le=1.0)
    warmup_epochs: int = Field(0, ge=0, le=MAX_EPOCHS, description="linear warm-up epochs before the schedule")


class AugmentSpec(Section):
    """Batch augmentation on the training images."""

    hflip: bool = False
    crop_padding: int = Field(0, ge=0, le=256, description="random crop after zero padding by this many pixels")


class MethodRef(Section):
    """An extension method by its registry name (``compressor.methods.register_method``) with its parameters."""

    name: str = Field(min_length=1)
    params: dict[str, Any] = Field(default_factory=dict, description="passed to the method's factory as given")


class TrainSpec(Section):
    """One training run: epochs, batch size, optimiser, schedule, augmentation and the supervised learning target."""

    epochs: int = Field(10, ge=1, le=MAX_EPOCHS)
    batch_size: int = Field(64, ge=1, le=MAX_BATCH)
    optimizer: OptimizerSpec = Field(default_factory=OptimizerSpec)
    schedule: ScheduleSpec = Field(default_factory=ScheduleSpec)
    augment: AugmentSpec = Field(default_factory=AugmentSpec)
    target: TargetSpec = Field(default_factory=TargetSpec)
    methods: list[MethodRef] = Field(default_factory=list, description="extension methods plugged into this "
                                     "training loop, in order (registered from Python with register_method)")

    @model_validator(mode="after")
    def _milestones_in_range(self) -> TrainSpec:
        bad = [m for m in self.schedule.milestones if not 0 < m < self.epochs]
        if bad:
            raise ValueError(f"schedule.milestones {bad} must lie strictly between 0 and epochs={self.epochs}")
        return self


class TeachersSpec(Section):
    """The K teachers: architectures (cycled over the subsets) trained from scratch or from ``pretrained``
    weights, or existing teachers listed in ``models`` (then ``archs`` is not used and K = ``len(models)``)."""

    archs: list[str] = Field(default_factory=lambda: ["small_cnn"], min_length=1)
    models: list[TeacherModelSpec] = Field(
        default_factory=list, max_length=64, description="existing teachers (ONNX models or registry weights), "
        "used as they are or fine-tuned; one per subset, so subsets.count = len(models)"
    )
    pretrained: PretrainedSpec | None = Field(None, description="weights file every teacher of archs starts from")
    training: TrainSpec = Field(default_factory=TrainSpec)
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="dropout rate in the teachers' classifier head")
    messy: MessySpec = Field(default_factory=MessySpec, description="messy collaboration while training the "
                             "teachers (MC-T)")

    @field_validator("archs")
    @classmethod
    def _known_archs(cls, archs: list[str]) -> list[str]:
        return [check_arch(a) for a in archs]

    @field_validator("models", mode="before")
    @classmethod
    def _bare_paths(cls, models: Any) -> Any:
        return [path_form(m) for m in models] if isinstance(models, list) else models

    @field_validator("pretrained", mode="before")
    @classmethod
    def _bare_path(cls, value: Any) -> Any:
        return path_form(value)

    @model_validator(mode="after")
    def _one_source(self) -> TeachersSpec:
        if self.models and self.pretrained is not None:
            raise ValueError("teachers.pretrained starts the teachers of teachers.archs; with teachers.models give "
                             "each weights file with finetune: true instead")
        return self

    def is_onnx(self, index: int) -> bool:
        """Whether teacher ``index`` is an existing ONNX model."""
        return bool(self.models) and self.models[index].is_onnx

    def used_as_is(self, index: int) -> bool:
        """Whether teacher ``index`` is an existing teacher used without training (listed, not fine-tuned)."""
        return bool(self.models) and not self.models[index].finetune


class StudentSpec(Section):
    """The compact student."""

    arch: str = "small_cnn"
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    pretrained: PretrainedSpec | None = Field(None, description="weights file the student starts from")

    @field_validator("arch")
    @classmethod
    def _known_arch(cls, arch: str) -> str:
        return check_arch(arch)

    @field_validator("pretrained", mode="before")
    @classmethod
    def _bare_path(cls, value: Any) -> Any:
        return path_form(value)


class AveragingSpec(Section):
    """Smooth parameter averaging of the student (RoS-KD Eq. 1) or an exponential moving average."""

    enabled: bool = True
    mode: Literal["mean", "ema"] = "mean"
    warmup_epochs: int = Field(10, ge=0, le=MAX_EPOCHS,
                               description="epochs before the first checkpoint enters the average")
    decay: float = Field(0.99, gt=0.0, lt=1.0, description="EMA decay per epoch (mode: ema)")
    recompute_batchnorm: bool = Field(True, description="recompute batch-norm statistics of the averaged model")


class DistillSpec(Section):
    """Multi-teacher distillation of the student (RoS-KD Eq. 4) and the methods that act on it.

    ``alpha = 0`` trains the student on its supervised target alone (Baseline I): no teacher is trained or loaded.
    """

    training: TrainSpec = Field(default_factory=TrainSpec)
    alpha: float = Field(0.9, ge=0.0, le=1.0, description="weight of the KD term; 1 - alpha weighs the CE term")
    temperature: float = Field(4.0, ge=0.01, le=100.0)
    weighting: Literal["equal", "exponential", "single", "adaptive"] = Field(
        "exponential", description="teacher weights: equal, drawn from Exp(1), a single teacher, or adaptive "
        "(each teacher's confidence in the given label, softmax-normalised over teachers: Baseline IV)"
    )
    weight_draw: Literal["batch", "sample"] = Field(
        "batch", description="exponential weights: one draw per batch (RoS-KD) or one per sample"
    )
    adaptive_temperature: float = Field(1.0, ge=0.01, le=100.0,
                                        description="adaptive weights: softmax_k(log conf_k / T)")
    single_teacher: int = Field(0, ge=0, description="index of the teacher used when weighting is 'single'")
    averaging: AveragingSpec = Field(default_factory=AveragingSpec)
    gate: GateSpec = Field(default_factory=GateSpec)
    teacher_noise: TeacherNoiseSpec = Field(default_factory=TeacherNoiseSpec)
    soft_randomization: SoftRandomizationSpec = Field(default_factory=SoftRandomizationSpec)
    messy: MessySpec = Field(default_factory=MessySpec, description="messy collaboration while distilling (MC-S)")
    group_dro: GroupDROSpec = Field(default_factory=GroupDROSpec)
    mutual: MutualSpec = Field(default_factory=MutualSpec)
    cache_teacher_logits: Literal["auto", "on", "off"] = Field(
        "auto", description="compute the teachers' logits over the training set once (float16, memory-mapped) and "
        "read them instead of running the K teachers every step. Valid when the teachers are deterministic for the "
        "distillation inputs: no fickle teachers, no distillation-time augmentation. auto = whenever valid, "
        "on = always (an error when not valid), off = never"
    )

    @property
    def uses_teachers(self) -> bool:
        """Whether the student learns from teachers at all (``alpha > 0``); Baseline I does not."""
        return self.alpha > 0.0

    def logit_cache_blockers(self) -> list[str]:
        """Why the teachers' logits cannot be cached (empty when they can).

        Logit noise, swapping, teacher weights and soft-randomization act after the teachers (or on the student's
        input only), so they do not prevent caching; only a teacher input or a teacher that changes per epoch does.
        """
        reasons = []
        if not self.uses_teachers:
            reasons.append("alpha is 0, so no teacher is used")
        if self.teacher_noise.fickle:
            reasons.append("teacher_noise.fickle keeps the teachers' dropout active, so their logits change per step")
        if self.training.augment.crop_padding > 0 or self.training.augment.hflip:
            reasons.append("training.augment gives the teachers a different input every epoch")
        return reasons

    @property
    def uses_logit_cache(self) -> bool:
        """Whether distillation reads cached teacher logits (``cache_teacher_logits`` on, or auto and valid)."""
        return self.cache_teacher_logits != "off" and not self.logit_cache_blockers()

    @model_validator(mode="after")
    def _methods_need_teachers(self) -> DistillSpec:
        if not self.uses_teachers:
            used = [name for name, on in (
                ("teacher_noise.fickle", self.teacher_noise.fickle),
                ("teacher_noise.logit_noise", self.teacher_noise.logit_noise > 0),
                ("teacher_noise.swap", self.teacher_noise.swap != "none"),
            ) if on]
            if used:
                raise ValueError(f"distillation.alpha is 0 (no teachers are used) but {', '.join(used)} act on the "
                                 "teachers; set alpha > 0 or remove them")
        if self.cache_teacher_logits == "on" and self.logit_cache_blockers():
            raise ValueError("distillation.cache_teacher_logits is 'on' but the teachers' logits cannot be cached: "
                             f"{'; '.join(self.logit_cache_blockers())} (use auto or off)")
        if self.weight_draw == "sample" and self.weighting != "exponential":
            raise ValueError(f"distillation.weight_draw: sample applies to exponential weights, not {self.weighting!r}")
        return self
