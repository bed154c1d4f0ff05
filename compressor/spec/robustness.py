"""Spec section for robustness certification: attacks, corruptions, randomized smoothing, loss landscape, gate.

Every perturbation size is in pixel units of images scaled to [0, 1] (the models contain their normalisation).
Sizes may be written as fractions, e.g. ``"8/255"``.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal, get_args

from pydantic import AfterValidator, BeforeValidator, Field, field_validator, model_validator

from compressor.spec.base import MAX_BATCH, Section

CorruptionName = Literal[
    "gaussian_noise", "shot_noise", "impulse_noise", "gaussian_blur", "defocus_blur",
    "contrast", "brightness", "jpeg", "pixelate",
]
CORRUPTION_NAMES: tuple[str, ...] = get_args(CorruptionName)
MAX_DRAWS = 10_000_000  # samples and noise draws: far beyond any test split, well inside int32
MAX_LINF_EPS = 1.0  # pixels are in [0, 1]
MAX_L2_EPS = 10_000.0  # beyond the L2 distance of any two images the spec allows (3 x 1024 x 1024: at most 1774)


def parse_size(value: Any) -> Any:
    """``"8/255"`` -> 0.03137...; numbers and other values pass through (pydantic checks them)."""
    if isinstance(value, str) and "/" in value:
        top, _, bottom = value.partition("/")
        try:
            return float(top) / float(bottom)
        except (ValueError, ZeroDivisionError):
            raise ValueError(f"{value!r} is not a number or a fraction like '8/255'") from None
    return value


def _increasing(values: list) -> list:
    """The values in increasing order, each once."""
    return sorted(set(values))


Size = Annotated[float, BeforeValidator(parse_size)]  # a number or a fraction like "8/255"
# Lists of sizes and severities: each item within its bounds, kept in increasing order without repeats.
LinfRadii = Annotated[list[Annotated[Size, Field(gt=0.0, le=MAX_LINF_EPS)]], AfterValidator(_increasing)]
L2Radii = Annotated[list[Annotated[Size, Field(gt=0.0, le=MAX_L2_EPS)]], AfterValidator(_increasing)]
CertifiedRadii = Annotated[list[Annotated[Size, Field(ge=0.0)]], AfterValidator(_increasing)]
Severities = Annotated[list[Annotated[int, Field(ge=1, le=5)]], AfterValidator(_increasing)]


class AttackSpec(Section):
    """FGSM and PGD under L-inf and L2 (untargeted; multi-label models through their per-class BCE loss)."""

    methods: list[Literal["fgsm", "pgd"]] = Field(default_factory=lambda: ["fgsm", "pgd"])
    linf_eps: LinfRadii = Field(default_factory=lambda: [1 / 255, 2 / 255, 4 / 255, 8 / 255],
                                description="L-inf radii in pixel units, e.g. '8/255'; empty = no L-inf attacks")
    l2_eps: L2Radii = Field(default_factory=lambda: [0.25, 0.5, 1.0],
                            description="L2 radii in pixel units; empty = no L2 attacks")
    steps: int = Field(10, ge=1, le=1000, description="PGD iterations")
    step_size: float | None = Field(None, gt=0.0, le=1000.0,
                                    description="PGD step in pixel units (default: step_scale*eps/steps)")
    step_scale: float = Field(2.5, gt=0.0, le=100.0,
                              description="PGD step = step_scale * eps / steps when step_size is unset")
    restarts: int = Field(1, ge=1, le=100, description="PGD runs per sample; the worst case over them counts")
    random_start: bool = Field(True, description="start PGD at a uniform random point of the eps ball")


class CorruptionSpec(Section):
    """Common corruptions (after Hendrycks & Dietterich 2019) at severities 1-5; mCA is their mean accuracy."""

    enabled: bool = True
    names: list[CorruptionName] = Field(default_factory=lambda: list(CORRUPTION_NAMES), min_length=1)
    severities: Severities = Field(default_factory=lambda: [1, 2, 3, 4, 5], min_length=1)


class SmoothingSpec(Section):
    """Randomized-smoothing certificate (Cohen et al. 2019): PREDICT and CERTIFY with Gaussian noise sigma."""

    enabled: bool = True
    sigma: float = Field(0.25, gt=0.0, le=10.0, description="std of the Gaussian noise, pixel units")
    n0: int = Field(100, ge=1, le=MAX_DRAWS, description="noise samples that select the top class")
    n: int = Field(10000, ge=1, le=MAX_DRAWS, description="noise samples that estimate its probability")
    alpha: float = Field(0.001, gt=0.0, lt=0.5, description="failure probability of the certificate")
    predict_n: int = Field(1000, ge=0, le=MAX_DRAWS,
                           description="noise samples of the PREDICT procedure (0 = skip PREDICT)")
    samples: int | None = Field(100, ge=1, le=MAX_DRAWS,
                                description="test samples certified (null = the whole test split)")
    batch_size: int = Field(2048, ge=1, le=MAX_BATCH, description="noisy inputs per forward pass")
    radii: CertifiedRadii = Field(default_factory=lambda: [0.0, 0.1, 0.25, 0.5, 0.75, 1.0], min_length=1,
                                  description="radii (L2, pixel units) at which certified accuracy is reported")
    compare: bool = Field(False, description="also certify the comparison models (costly), not only the final one")


class LandscapeSpec(Section):
    """Loss surface along two filter-normalised random directions (Li et al. 2018; RoS-KD Figure 4)."""

    enabled: bool = True
    grid: int = Field(15, ge=3, le=101, description="points per axis")
    span: float = Field(1.0, gt=0.0, le=100.0, description="the grid covers [-span, span] along each direction")
    samples: int = Field(256, ge=1, le=MAX_DRAWS, description="images the loss is averaged over")
    split: Literal["test", "train"] = Field("test", description="test: clean labels (as RoS-KD); train: noisy labels")
    compare: bool = Field(True, description="also map the non-averaged student (RoS-KD compares two students)")


class AttackThreshold(Section):
    """Smallest accepted accuracy under one attack at one radius."""

    eps: Size = Field(gt=0.0)
    value: float = Field(ge=0.0, le=1.0)
    norm: Literal["linf", "l2"] = "linf"


class RadiusThreshold(Section):
    """Smallest accepted certified accuracy at a radius."""

    radius: Size = Field(ge=0.0)
    value: float = Field(ge=0.0, le=1.0)


class GateSpec(Section):
    """Optional thresholds on the final student; any that fails makes ``compressor run`` / ``certify`` exit 3."""

    min_clean_accuracy: float | None = Field(None, ge=0.0, le=1.0)
    min_fgsm_accuracy: list[AttackThreshold] = Field(default_factory=list)
    min_pgd_accuracy: list[AttackThreshold] = Field(default_factory=list)
    min_mca: float | None = Field(None, ge=0.0, le=1.0, description="smallest mean corruption accuracy")
    min_certified_accuracy: list[RadiusThreshold] = Field(default_factory=list)

    @field_validator("min_fgsm_accuracy", "min_pgd_accuracy", "min_certified_accuracy", mode="before")
    @classmethod
    def _listify(cls, value: Any) -> Any:
        """A single threshold mapping is accepted where a list of them is expected."""
        return [value] if isinstance(value, dict) else value


class RobustnessSpec(Section):
    """Robustness certification of the final student, with the run's other models for comparison."""

    enabled: bool = Field(False, description="run the certify stage (clean, attacks, corruptions, smoothing)")
    models: Literal["final", "students", "all"] = Field(
        "all", description="final: the final student only; students: + the other students; all: + the teachers"
    )
    samples: int | None = Field(None, ge=1, le=MAX_DRAWS,
                                description="test samples for attacks and corruptions (null = all)")
    batch_size: int = Field(256, ge=1, le=MAX_BATCH, description="images per attack / corruption batch")
    attacks: AttackSpec = Field(default_factory=AttackSpec)
    corruptions: CorruptionSpec = Field(default_factory=CorruptionSpec)
    smoothing: SmoothingSpec = Field(default_factory=SmoothingSpec)
    landscape: LandscapeSpec = Field(default_factory=LandscapeSpec)
    gate: GateSpec = Field(default_factory=GateSpec)

    @model_validator(mode="after")
    def _gate_is_measurable(self) -> RobustnessSpec:
        """Every gate threshold must name a figure that the settings above actually produce."""
        for method in ("fgsm", "pgd"):
            for i, t in enumerate(getattr(self.gate, f"min_{method}_accuracy")):
                where = f"gate.min_{method}_accuracy[{i}]"
                if method not in self.attacks.methods:
                    raise ValueError(f"{where} needs '{method}' in robustness.attacks.methods {self.attacks.methods}")
                radii = getattr(self.attacks, f"{t.norm}_eps")
                if not any(math.isclose(r, t.eps, rel_tol=1e-6, abs_tol=1e-9) for r in radii):
                    raise ValueError(f"{where}: eps {t.eps:.6g} is not in robustness.attacks.{t.norm}_eps "
                                     f"{[round(r, 6) for r in radii]}; add it there")
        if self.gate.min_mca is not None and not self.corruptions.enabled:
            raise ValueError("gate.min_mca needs robustness.corruptions.enabled: true")
        if self.gate.min_certified_accuracy and not self.smoothing.enabled:
            raise ValueError("gate.min_certified_accuracy needs robustness.smoothing.enabled: true")
        return self
