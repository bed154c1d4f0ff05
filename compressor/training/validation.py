"""Validation after every epoch: the figures, the weights ``select: best_val`` keeps, and early stopping.

``Validation`` is the loop's last hook. At the end of every epoch (after its last step, before the schedules step)
it measures every learner on the validation split in evaluation mode: ``val_loss``, the supervised loss
(cross-entropy, or binary cross-entropy per label) against the validation labels as given, and ``val_accuracy``,
the agreement with them (``Task.fit_accuracy``, the training accuracy's definition). Where noise was injected the
validation labels are as noisy as the training labels, so these figures rank epochs the way the (unknown) clean
figures do without ever looking at the test split. The figures go to the history (``peer_val_loss`` ... for CMD's
peer).

Decisions, on the main learner's figures:

* ``select: best_val`` keeps a CPU copy of the weights of the epoch with the highest ``val_accuracy`` (ties: the
  lower ``val_loss``, then the earlier epoch) and loads them back into the model when training ends. ``last``
  keeps the last epoch's weights.
* ``early_stopping`` ends training once ``metric`` has not improved by more than ``min_delta`` for ``patience``
  epochs in a row (``loop.stop``).

``History.selection`` records the outcome: which epoch's weights the model holds, its validation figures, how many
epochs ran and whether training stopped early. In a distributed run every rank measures a contiguous slice of the
validation split and the sums are added up over the ranks, so every rank sees the same figures and takes the same
decisions.
"""

from __future__ import annotations

from typing import Any

import torch

from compressor.data.types import Split
from compressor.distributed import DistInfo, Shard
from compressor.metrics import fit_sums
from compressor.spec.training import TrainSpec
from compressor.task import Task
from compressor.training.checkpointing import cpu_copy
from compressor.training.hooks import Hook


class NoValidationData(ValueError):
    """``select: best_val`` or early stopping was asked for, but the validation split is empty."""


def needs_validation(spec: TrainSpec) -> list[str]:
    """The settings of a training section that decide on validation figures (empty: none does)."""
    wanted = []
    if spec.select == "best_val":
        wanted.append("select: best_val")
    if spec.early_stopping.enabled:
        wanted.append("early_stopping")
    return wanted


class Validation(Hook):
    """Measures every learner on ``data`` after each epoch; keeps the best weights and stops early as ``spec`` says.

    Args:
        data: the validation split (labels as given; never empty: ``compressor.recipes.validation_hooks`` decides).
        task: what the models predict.
        device: where the models are.
        spec: the training section (``select``, ``early_stopping``).
        dist: this process's place when the learners are replicated over ranks.
    """

    def __init__(self, data: Split, task: Task, device: torch.device | str, spec: TrainSpec,
                 dist: DistInfo | None = None):
        self.data, self.task, self.device, self.spec = data, task, device, spec
        self.dist = dist or DistInfo()
        self.latest: tuple[float, float] | None = None  # the main learner's (loss, accuracy) of this epoch
        self.best: dict[str, Any] | None = None  # best_val: epoch, loss, accuracy and the weights
        self.watched: float | None = None  # early stopping: best value so far of the watched figure (lower = better)
        self.waited = 0  # epochs since it last improved

    def _measure(self, model: torch.nn.Module) -> tuple[float, float]:
        """Mean validation loss and accuracy of ``model`` (this rank's slice, summed over the ranks)."""
        was_training = model.training
        start, stop = Shard(self.dist.rank, self.dist.world_size).bounds(len(self.data))
        sums = fit_sums(model, self.data, self.task, self.device, start, stop)
        model.train(was_training)
        loss, correct, rows = self.dist.sum(sums, next(model.parameters()).device)
        return loss / rows, correct / rows

    def epoch_figures(self, loop, index: int) -> dict[str, float]:
        loss, accuracy = self._measure(loop.learners[index].model)
        if index == 0:
            self.latest = (loss, accuracy)
        return {"val_loss": loss, "val_accuracy": accuracy}

    def on_epoch_end(self, loop) -> None:
        loss, accuracy = self.latest
        if self.spec.select == "best_val" and (
            self.best is None or (accuracy, -loss) > (self.best["accuracy"], -self.best["loss"])
        ):
            self.best = {"epoch": loop.epoch, "loss": loss, "accuracy": accuracy,
                         "weights": cpu_copy(loop.learners[0].model.state_dict())}
        stopping = self.spec.early_stopping
        if stopping.enabled:
            value = loss if stopping.metric == "val_loss" else -accuracy  # lower is better
            if self.watched is None or value < self.watched - stopping.min_delta:
                self.watched, self.waited = value, 0
            else:
                self.waited += 1
                loop.stop = loop.stop or self.waited >= stopping.patience

    def on_fit_end(self, loop) -> None:
        history = loop.history
        epochs_run = len(history.loss)
        kept = {"epoch": epochs_run, "val_loss": history.extra["val_loss"][-1],
                "val_accuracy": history.extra["val_accuracy"][-1]}
        if self.best is not None:
            loop.learners[0].model.load_state_dict(self.best["weights"])
            kept = {"epoch": self.best["epoch"] + 1, "val_loss": self.best["loss"],
                    "val_accuracy": self.best["accuracy"]}
        select = "best_val" if self.spec.select == "best_val" else "last"  # auto arrives resolved, or means last
        history.selection = {"select": select, **kept, "epochs_run": epochs_run,
                             "stopped_early": epochs_run < loop.epochs}

    def state_dict(self) -> dict[str, Any]:
        return {"latest": self.latest, "best": self.best, "watched": self.watched, "waited": self.waited}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.latest, self.best = state["latest"], state["best"]
        self.watched, self.waited = state["watched"], state["waited"]
