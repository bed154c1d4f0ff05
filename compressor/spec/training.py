"""Spec sections for training: optimiser, schedule, augmentation, teachers, student and distillation."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

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
from compressor.spec.model_files import PretrainedFile, TeacherFile
from compressor.spec.model_names import ArchName

MAX_EPOCHS = 100_000
MAX_POOL_VIEWS = 1024
DEFAULT_POOL_VIEWS = 8  # view_pool: auto (benchmarks/RESULTS.md, "Teacher view pool")
REPLACED = {"cache_teacher_logits": "distillation.cache_teacher_logits was replaced by distillation.view_pool "
            "(auto: the teachers' outputs for 8 stored views per image wherever valid, 0: teachers run live on every "
            "batch, N: N views per image); remove it"}


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

    @property
    def distinct_views(self) -> int:
        """How many different views of an image the augmentation can produce (1 without augmentation)."""
        return (2 * self.crop_padding + 1) ** 2 * (2 if self.hflip else 1)


class MethodRef(Section):
    """An extension method by its registry name (``compressor.methods.register_method``) with its parameters."""

    name: str = Field(min_length=1)
    params: dict[str, Any] = Field(default_factory=dict, description="passed to the method's factory as given")


class EarlyStoppingSpec(Section):
    """Stop training once a validation figure has not improved for ``patience`` epochs (needs validation samples).

    An epoch improves on the best so far when ``val_loss`` falls by more than ``min_delta`` (or ``val_accuracy``
    rises by more than ``min_delta``). Which weights are kept after the stop is ``select``'s choice.
    """

    enabled: bool = False
    patience: int = Field(5, ge=1, le=MAX_EPOCHS, description="epochs without improvement before training stops")
    metric: Literal["val_loss", "val_accuracy"] = "val_loss"
    min_delta: float = Field(0.0, ge=0.0, le=1e6, description="smallest change that counts as an improvement")


class TrainSpec(Section):
    """One training run: epochs, batch size, optimiser, schedule, augmentation and the supervised learning target.

    Validation loss and accuracy (on the validation labels as given, noisy or not) are measured after every epoch
    when the data has a validation split; ``select`` and ``early_stopping`` decide on them.
    """

    epochs: int = Field(10, ge=1, le=MAX_EPOCHS)
    batch_size: int = Field(64, ge=1, le=MAX_BATCH)
    optimizer: OptimizerSpec = Field(default_factory=OptimizerSpec)
    schedule: ScheduleSpec = Field(default_factory=ScheduleSpec)
    augment: AugmentSpec = Field(default_factory=AugmentSpec)
    target: TargetSpec = Field(default_factory=TargetSpec)
    methods: list[MethodRef] = Field(default_factory=list, description="extension methods plugged into this "
                                     "training loop, in order (registered from Python with register_method)")
    select: Literal["auto", "last", "best_val"] = Field(
        "auto", description="the weights kept: the last epoch's, or the epoch with the best validation accuracy "
        "(ties: lower validation loss, then the earlier epoch); the student with averaging also weighs the "
        "averaged student against that epoch. auto: best_val for the teachers when the data has a validation "
        "split (a teacher that memorised noisy labels hands them on as targets), last otherwise and for the "
        "student (see docs/validation.md)")
    early_stopping: EarlyStoppingSpec = Field(default_factory=EarlyStoppingSpec)
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        "auto", description="arithmetic of the forward pass and losses (torch.autocast; fp16 with a gradient "
        "scaler): auto = bf16 on a CUDA device that supports it (else fp16), fp32 on the CPU; bf16 is allowed on "
        "the CPU, fp16 needs CUDA")

    def with_select(self, prefer_best_val: bool) -> TrainSpec:
        """This section with ``select: auto`` resolved: ``best_val`` when ``prefer_best_val`` (a teacher with
        validation data), else ``last``; an explicit ``last`` or ``best_val`` is kept."""
        if self.select != "auto":
            return self
        return self.model_copy(update={"select": "best_val" if prefer_best_val else "last"})

    @model_validator(mode="after")
    def _milestones_in_range(self) -> TrainSpec:
        bad = [m for m in self.schedule.milestones if not 0 < m < self.epochs]
        if bad:
            raise ValueError(f"schedule.milestones {bad} must lie strictly between 0 and epochs={self.epochs}")
        return self


class TeachersSpec(Section):
    """The K teachers: architectures (cycled over the subsets) trained from scratch or from ``pretrained``
    weights, or existing teachers listed in ``models`` (then ``archs`` is not used and K = ``len(models)``)."""

    archs: list[ArchName] = Field(default_factory=lambda: ["small_cnn"], min_length=1)
    models: list[TeacherFile] = Field(
        default_factory=list, max_length=64, description="existing teachers (ONNX models or registry weights), "
        "used as they are or fine-tuned; one per subset, so subsets.count = len(models)"
    )
    pretrained: PretrainedFile | None = Field(None, description="weights file every teacher of archs starts from")
    training: TrainSpec = Field(default_factory=TrainSpec)
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="dropout rate in the teachers' classifier head")
    messy: MessySpec = Field(default_factory=MessySpec, description="messy collaboration while training the "
                             "teachers (MC-T)")

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

    arch: ArchName = "small_cnn"
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    pretrained: PretrainedFile | None = Field(None, description="weights file the student starts from")


class AveragingSpec(Section):
    """Smooth parameter averaging of the student (RoS-KD Eq. 1) or an exponential moving average."""

    enabled: bool = True
    mode: Literal["mean", "ema"] = "mean"
    warmup_epochs: int = Field(0, ge=0, le=MAX_EPOCHS,
                               description="epochs before the first checkpoint enters the average (0: every epoch's "
                               "student, measured better than the paper's 10 in docs/quality.md)")
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
    weight_scale: Literal["normalised", "raw"] = Field(
        "normalised", description="exponential weights: normalised = divided by their sum (the KD term keeps one "
        "teacher's scale); raw = the paper's Exp(1) draws as they are (their sum has mean K). docs/quality.md compares "
        "them"
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
    view_pool: Annotated[int, Field(ge=0, le=MAX_POOL_VIEWS)] | Literal["auto"] = Field(
        "auto", description="teacher outputs for V augmented views of every training image, computed once after "
        "the teachers are trained (float16, memory-mapped, reused by later runs with the same teachers and data); "
        "each epoch the student trains on one stored view per image. 0 = the teachers run on every batch; auto = "
        f"{DEFAULT_POOL_VIEWS} views wherever valid (not with fickle teachers). Capped at the augmentation's distinct "
        "views (1 without augmentation)"
    )

    @model_validator(mode="before")
    @classmethod
    def _replaced_fields(cls, data: Any) -> Any:
        if isinstance(data, dict):
            replaced = [message for name, message in REPLACED.items() if name in data]
            if replaced:
                raise ValueError("; ".join(replaced))
        return data

    @property
    def uses_teachers(self) -> bool:
        """Whether the student learns from teachers at all (``alpha > 0``); Baseline I does not."""
        return self.alpha > 0.0

    def view_pool_blockers(self) -> list[str]:
        """Why the teachers must run live on every batch (empty when their outputs can be pooled).

        Logit noise, swapping, teacher weights, the entropy gate, messy collaboration, soft-randomization and the
        mutual peer act after the teachers, on the student's input or on the learners, so they work on stored
        outputs; only a teacher whose output for the same input changes per step cannot be stored.
        """
        if self.teacher_noise.fickle:
            return ["teacher_noise.fickle keeps the teachers' dropout active, so their outputs change on every step"]
        return []

    @property
    def pool_views(self) -> int:
        """Views per image of the view pool distillation reads; 0 when the teachers run live on every batch."""
        if not self.uses_teachers or self.view_pool == 0 or self.view_pool_blockers():
            return 0
        views = DEFAULT_POOL_VIEWS if self.view_pool == "auto" else self.view_pool
        return min(views, self.training.augment.distinct_views)

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
        if self.view_pool not in ("auto", 0) and self.uses_teachers and self.view_pool_blockers():
            raise ValueError(f"distillation.view_pool: {self.view_pool} stores the teachers' outputs once, but "
                             f"{'; '.join(self.view_pool_blockers())}; set view_pool: 0 (teachers run live) or auto")
        if self.weight_draw == "sample" and self.weighting != "exponential":
            raise ValueError(f"distillation.weight_draw: sample applies to exponential weights, not {self.weighting!r}")
        return self
