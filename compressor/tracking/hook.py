"""The training loop's tracking hook: each epoch's figures to the run's tracker as the epoch ends."""

from __future__ import annotations

from compressor.tracking import Tracker, epoch_scalars
from compressor.training.hooks import Hook


class TrackingHook(Hook):
    """Logs the history's newest epoch (every learner's figures: training, validation, the methods') at step
    ``epoch + 1``, under ``model`` (``teacher_<i>``, ``student``; a peer's figures under ``peer``), every tag behind
    ``prefix`` (``""``: none; a candidate student of ``data.label_issues: auto`` logs under ``label_issues_<mode>/``).

    Stateless and drawing nothing, so adding it changes neither the training nor its checkpoints.
    """

    def __init__(self, tracker: Tracker, model: str, prefix: str = ""):
        self.tracker, self.model, self.prefix = tracker, model, prefix

    def on_epoch_end(self, loop) -> None:
        history = loop.history.as_dict()
        others = tuple(learner.name for learner in loop.learners[1:])
        epoch = len(loop.history.loss) - 1
        scalars = epoch_scalars(history, self.model, epoch, others)
        self.tracker.log_scalars({self.prefix + tag: value for tag, value in scalars.items()}, step=epoch + 1)
