"""Spec section for experiment tracking: the run's spec, per-epoch figures and final metrics to TensorBoard or MLflow.

Off by default. Every run logs under one run name, ``<name>-<config id>-seed<seed>``: the config id is a hash of
the spec without its seed, output directory, device and tracking settings, so the seeds of one configuration share
it and a sweep over noise rates gets one id per rate. ``docs/tracking.md`` says where each backend writes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from compressor.spec.base import Section


class TrackingSpec(Section):
    """Where a run's figures go besides the run directory (``backend: none`` keeps them only there)."""

    backend: Literal["none", "tensorboard", "mlflow"] = Field(
        "none", description="tensorboard (torch.utils.tensorboard) or mlflow (pip install '.[mlflow]')")
    dir: Path | None = Field(
        None, strict=False, description="tensorboard: the log root, one sub-folder per run (default: runs/"
        "tensorboard); mlflow: a local folder for MLflow's file store (default: MLflow's tracking URI, e.g. "
        "$MLFLOW_TRACKING_URI)")
    uri: str | None = Field(None, max_length=2000, description="mlflow: a tracking URI (http://..., "
                            "sqlite:///...); overrides dir")
    experiment: str | None = Field(None, min_length=1, max_length=500,
                                   description="mlflow experiment (default: the spec's name)")
