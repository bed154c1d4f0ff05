"""Spec section for robustness certification of the student."""

from __future__ import annotations

from compressor.spec.base import Section


class RobustnessSpec(Section):
    """Robustness certification of the student (filled in by the certification stage)."""

    enabled: bool = False
