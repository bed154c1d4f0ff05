"""Experiment tracking: a run's spec, per-epoch figures and final metrics to TensorBoard or MLflow (``tracking:``).

A ``Tracker`` is opened by each stage that logs (rank 0 only): the training stages log every epoch through
``TrackingHook`` (``compressor.tracking.hook``), the metrics stage logs the final metrics and the spec. All of a
run's figures go under one run name (``run_name``) so that runs of a sweep line up side by side:

* per epoch, step = epoch (1-based): ``<model>/train_loss``, ``<model>/train_accuracy``, ``<model>/lr``,
  ``<model>/val_loss``, ``<model>/val_accuracy`` and the methods' figures (``student/kd``, ``student/gate_pass_rate``
  ...), for ``teacher_<i>``, ``student`` and ``peer``;
* at the end: ``final/<model>/test_<metric>`` (accuracy, precision, recall, f1, auc, worst-group accuracy) and
  ``final/<model>/val_<figure>`` for every model of ``metrics.json``, and the resolved spec as parameters.

This module imports neither torch nor a backend; ``missing_extra`` tells the command line, before anything runs,
that the MLflow backend is asked for but not installed.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

EXCLUDED_FROM_CONFIG = ("seed", "output_dir", "device", "tracking", "name")  # what a sweep's runs may differ in
TEST_FIGURES = ("accuracy", "precision", "recall", "f1", "auc", "worst_group_accuracy")


class TrackingError(Exception):
    """The tracking backend cannot be used (not installed, or it refused the run)."""


class Tracker(Protocol):
    """What the stages log through; every backend implements it."""

    def log_scalars(self, values: Mapping[str, float], step: int) -> None:
        """Log named numbers at ``step``."""

    def log_final(self, params: Mapping[str, str | int | float | bool], metrics: Mapping[str, float]) -> None:
        """Log the run's parameters (the flattened spec) with its final metrics."""

    def close(self) -> None:
        """Flush and release the backend."""


def config_id(spec_dict: Mapping[str, Any]) -> str:
    """Eight hex digits identifying the spec without its seed, name, output directory, device and tracking."""
    config = {k: v for k, v in spec_dict.items() if k not in EXCLUDED_FROM_CONFIG}
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:8]


def run_name(spec_dict: Mapping[str, Any]) -> str:
    """``<name>-<config id>-seed<seed>``: the seeds of one configuration share the prefix (see ``config_id``)."""
    return f"{spec_dict['name']}-{config_id(spec_dict)}-seed{spec_dict['seed']}"


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, str | int | float | bool]:
    """The spec as ``{"teachers.training.epochs": 15, ...}``; lists and None as text."""
    flat: dict[str, str | int | float | bool] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        elif isinstance(value, (bool, int, float, str)):
            flat[name] = value
        else:
            flat[name] = json.dumps(value, default=str)
    return flat


def installed(package: str) -> bool:
    """Whether ``package`` can be imported (looked up without importing it)."""
    return importlib.util.find_spec(package) is not None


def missing_extra(backend: str) -> str | None:
    """The one-line problem when ``backend`` needs a package that is not installed (None when it can be used)."""
    if backend == "mlflow" and not installed("mlflow"):
        return "tracking.backend: mlflow needs the optional extra: pip install \".[mlflow]\" (or pip install mlflow)"
    if backend == "tensorboard" and not installed("tensorboard"):
        return "tracking.backend: tensorboard needs the tensorboard package: pip install tensorboard"
    return None


def open_tracker(spec_dict: Mapping[str, Any], run_dir: str | Path) -> Tracker | None:
    """The tracker of the spec's ``tracking`` section (None when it is off).

    Args:
        spec_dict: the resolved spec as plain data (``Spec.model_dump(mode="json")``).
        run_dir: the run directory (identifies the run to the backend together with the run name).

    Raises:
        TrackingError: the backend is not installed.
    """
    tracking = spec_dict.get("tracking") or {}
    backend = tracking.get("backend", "none")
    if backend == "none":
        return None
    problem = missing_extra(backend)
    if problem:
        raise TrackingError(problem)
    name = run_name(spec_dict)
    if backend == "tensorboard":
        from compressor.tracking.tensorboard import TensorBoardTracker

        root = Path(tracking.get("dir") or "runs/tensorboard")
        return TensorBoardTracker(root / name)
    from compressor.tracking.mlflow_backend import MlflowTracker

    uri = tracking.get("uri")
    if uri is None and tracking.get("dir"):
        uri = f"sqlite:///{Path(tracking['dir']).expanduser().resolve() / 'mlflow.db'}"
    return MlflowTracker(uri, tracking.get("experiment") or spec_dict["name"], name,
                         run_key=f"{name}@{Path(run_dir).resolve()}", params=flatten(spec_dict))


def epoch_scalars(history: Mapping[str, list[float]], model: str, epoch: int, others: tuple[str, ...] = ("peer",)
                  ) -> dict[str, float]:
    """The figures of ``epoch`` (0-based) of a history (``History.as_dict()``) as ``{"<model>/<figure>": value}``.

    Figures of another learner (prefixed ``peer_``) are filed under that learner. A figure recorded only for the
    last epochs (its list is shorter) is aligned to the end.
    """
    epochs = len(history.get("loss", []))
    scalars = {}
    for key, values in history.items():
        at = epoch - (epochs - len(values))
        if not 0 <= at < len(values):
            continue
        owner, figure = model, key
        for other in others:
            if key.startswith(f"{other}_"):
                owner, figure = other, key[len(other) + 1:]
        figure = {"loss": "train_loss", "accuracy": "train_accuracy"}.get(figure, figure)
        scalars[f"{owner}/{figure}"] = float(values[at])
    return scalars


def log_history(tracker: Tracker, history: Mapping[str, list[float]], model: str) -> None:
    """Log every epoch of a finished training's history (a teacher trained by another process)."""
    for epoch in range(len(history.get("loss", []))):
        tracker.log_scalars(epoch_scalars(history, model, epoch), step=epoch + 1)


def final_scalars(metrics: Mapping[str, Any]) -> dict[str, float]:
    """``final/<model>/test_<metric>`` and ``final/<model>/val_<figure>`` from ``metrics.json``'s content."""
    scalars = {}
    for model, figures in metrics["test"].items():
        for key in TEST_FIGURES:
            if figures.get(key) is not None:
                scalars[f"final/{model}/test_{key}"] = float(figures[key])
    for model, figures in (metrics.get("validation") or {}).get("models", {}).items():
        for key in ("loss", "accuracy"):
            scalars[f"final/{model}/val_{key}"] = float(figures[key])
    return scalars
