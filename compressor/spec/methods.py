"""Spec sections of the methods of the four papers (RoS-KD, noise in KD, CMD, GroupDistil).

Every section defaults to "off", so a spec that names none of them trains exactly as before. ``docs/methods.md``
describes each method, its equations and the fields below.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from compressor.spec.base import Section
from compressor.spec.model_names import ArchName


class MethodSpec(Section):
    """Top-level method selector: RoS-KD's baselines I-V and RoS-KD itself as presets of the other sections.

    ``custom`` (default) uses the other sections as written. A preset fills in the fields it controls (see
    ``compressor/spec/presets.py``); setting one of those fields to another value in the same spec is an error.
    """

    preset: Literal["custom", "baseline_1", "baseline_2", "baseline_3", "baseline_4", "baseline_5", "roskd"] = Field(
        "custom", description="baseline_1 student alone, baseline_2 single teacher, baseline_3 equal weights, "
        "baseline_4 adaptive per-sample weights, baseline_5 no averaging, roskd everything, custom as written",
    )


class TargetSpec(Section):
    """Learning target of the supervised (self-KD) term: CE, LS, CP, Boot-soft, ProSelfLC or Mconf (CMD Table 2).

    The target is ``(1 - eps) q + eps p`` (LS: ``eps u``; CP: ``- eps p``, with gradient through ``p``), with a fixed
    ``eps`` (LS, CP, Boot-soft) or ``eps = g * l(p)``, ``l(p) = 1 - H(p) / H(u)`` and ``g = h(t / Gamma - 0.5, b1)``
    (ProSelfLC) or ``g = h(r - rho, b1)`` (Mconf, ``r`` = mean normalised certainty of the previous epoch).
    """

    kind: Literal["ce", "label_smoothing", "confidence_penalty", "boot_soft", "proselflc", "mconf"] = "ce"
    epsilon: float = Field(0.1, ge=0.0, le=1.0, description="fixed self trust of label_smoothing, "
                           "confidence_penalty and boot_soft")
    b1: float = Field(16.0, gt=0.0, description="sharpness of the logistic g of proselflc and mconf")
    rho: float = Field(0.5, ge=0.0, le=1.0, description="mconf: certainty above which the model is trusted")


class MessySpec(Section):
    """Messy collaboration: each batch, a share ``rate`` of the targets is replaced by a random incorrect class.

    Multi-label targets flip each 0/1 entry with probability ``rate`` instead.
    """

    rate: float = Field(0.0, ge=0.0, lt=1.0, description="probability that a target is corrupted, per batch")


class SoftRandomizationSpec(Section):
    """Soft-randomization: the student sees ``x + d``, ``d ~ N(0, sigma^2)`` (pixels in [0, 1]); teachers see ``x``."""

    sigma: float = Field(0.0, ge=0.0, le=1.0, description="standard deviation of the student's input noise")


class TeacherNoiseSpec(Section):
    """Noise on the teachers' supervision while distilling (noise-in-KD paper, section 4.1 and appendix A.2)."""

    fickle: bool = Field(False, description="keep the teachers' dropout active while distilling (needs "
                         "teachers.dropout > 0)")
    logit_noise: float = Field(0.0, ge=0.0, le=10.0, description="sigma of signal-dependent noise z' = (1 + d) z, "
                               "d ~ N(0, sigma^2) per logit")
    swap: Literal["none", "top2", "all"] = Field("none", description="random swapping of softened outputs: the top "
                                                 "two classes, or every consecutive pair in rank order")
    swap_probability: float = Field(0.0, ge=0.0, le=1.0, description="probability of swapping an eligible pair")
    swap_threshold: float = Field(0.1, gt=0.0, le=1.0, description="a pair is eligible when its softened "
                                  "probabilities differ by less than this")

    @model_validator(mode="after")
    def _swap_consistent(self) -> TeacherNoiseSpec:
        if self.swap != "none" and self.swap_probability == 0.0:
            raise ValueError(f"teacher_noise.swap is {self.swap!r} but swap_probability is 0: nothing would be "
                             "swapped; set swap_probability > 0 or swap: none")
        return self


class GateSpec(Section):
    """CMD's entropy gate on the teachers' (and the mutual peer's) knowledge.

    A teacher output reaches the student only where its entropy (temperature 1) is below
    ``chi = H(u) / eta * 2 h(t / Gamma - 0.5, b2)``, ``h(l, b) = 1 / (1 + exp(-l b))``. ``all`` keeps everything
    (no gate), ``zero`` keeps nothing, ``cmd_s`` is static (``b2 = 0``), ``cmd_p`` progressive (``b2 != 0``;
    ``b2 < 0`` tightens the gate during training, the CMD paper's best setting under label noise).
    """

    knowledge: Literal["all", "zero", "cmd_s", "cmd_p"] = "all"
    eta: float = Field(2.0, gt=0.0, description="chi starts from H(u) / eta; eta <= 1 passes all knowledge")
    b2: float = Field(0.0, description="slope of the progressive schedule (cmd_p only)")
    progress: Literal["epoch", "step"] = Field("epoch", description="t / Gamma counts epochs or optimiser steps")
    renormalize: bool = Field(True, description="rescale the kept teachers' weights to sum to one per sample")

    @model_validator(mode="after")
    def _slope_matches_kind(self) -> GateSpec:
        if self.knowledge == "cmd_p" and self.b2 == 0.0:
            raise ValueError("gate.knowledge is 'cmd_p' (progressive) but b2 is 0, which makes chi static; "
                             "set b2 != 0 (b2 < 0 is best under label noise) or use cmd_s")
        if self.knowledge != "cmd_p" and self.b2 != 0.0:
            raise ValueError(f"gate.b2={self.b2} is only used by knowledge: cmd_p (got {self.knowledge!r})")
        return self


class GroupDROSpec(Section):
    """GroupDistil: per-group KD losses weighted by exponentiated-gradient group weights (needs group labels)."""

    enabled: bool = False
    eta_w: float = Field(0.01, gt=0.0, le=10.0, description="step size of w_d <- w_d * exp(eta_w * loss_d)")


class MutualSpec(Section):
    """CMD mutual distillation: a peer model is trained beside the student and each teaches the other.

    Each peer's loss adds ``weight * tau^2 KL(p_other || p_self)`` through the fused op, gated by ``gate``.
    """

    enabled: bool = False
    peer_arch: ArchName | None = Field(None, description="architecture of the peer (default: the student's)")
    weight: float = Field(1.0, gt=0.0, le=100.0, description="weight of the peer's knowledge in each model's loss")
    temperature: float = Field(1.0, ge=0.01, le=100.0, description="temperature of the peer exchange")
