"""TensorBoard backend: event files under ``<tracking.dir>/<run name>/`` (``tensorboard --logdir <tracking.dir>``)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from torch.utils.tensorboard import SummaryWriter


class TensorBoardTracker:
    """Scalars per step, and at the end the spec as hyper-parameters (HPARAMS tab) and as text.

    Args:
        log_dir: the run's folder (created when missing); each stage that logs adds an event file to it.
    """

    def __init__(self, log_dir: str | Path):
        self.writer = SummaryWriter(log_dir=str(log_dir))

    def log_scalars(self, values: Mapping[str, float], step: int) -> None:
        for tag, value in values.items():
            self.writer.add_scalar(tag, value, global_step=step)
        self.writer.flush()

    def log_final(self, params: Mapping[str, str | int | float | bool], metrics: Mapping[str, float]) -> None:
        self.writer.add_text("spec", "\n".join(f"    {key}: {value}" for key, value in params.items()))
        self.log_scalars(metrics, step=0)
        # run_name "." writes the hyper-parameter summary into this run's folder rather than a timestamped one
        self.writer.add_hparams(dict(params), {f"hparam/{key}": value for key, value in metrics.items()}, run_name=".")
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
