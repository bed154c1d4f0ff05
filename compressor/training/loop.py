"""The one training loop: ``Loop.fit`` trains a list of learners together, epoch by epoch, with method hooks.

A teacher is one learner whose loss is its supervised target; the student is one learner (two with CMD's mutual
peer) whose loss the distillation hooks extend (``compressor.training.hooks``). Per epoch, for every step:

1. ``on_step_start`` hooks (e.g. CMD's gate threshold at this step's training progress);
2. the batch source draws the batch (order, augmentation); ``on_batch`` hooks change it in hook order (targets,
   inputs, the teachers' knowledge); in a distributed run the batch is then cut to this rank's rows;
3. ``_step``, the one place of forward, backward and step: per learner,
   ``rows = target_loss(logits, batch.targets)``, then each hook's ``loss`` (the KD term, the mutual exchange),
   then the first hook's ``reduce`` (GroupDistil) or the mean; one backward pass serves every learner (their
   graphs are disjoint: peers see each other detached), then every optimiser steps. The batch hooks, the forward
   pass and the losses run under the loop's ``precision`` (``compressor.training.precision``: ``torch.autocast``,
   a gradient scaler around the backward pass and the steps in fp16, channels-last batches on CUDA).

At the end of the epoch: every learner's figures (``loss``, ``accuracy``, ``lr`` and the hooks' ``epoch_figures``,
e.g. the validation figures) go to the history, the schedules step, ``on_epoch_end`` hooks run (parameter
averaging, model selection, early stopping), and the epoch checkpoint is saved. A hook that sets ``loop.stop``
ends training after that epoch (early stopping). After the last epoch: ``on_fit_end``.

Every random choice of the loop (batch order, augmentation, the methods' draws) comes from ``generator``; dropout
uses torch's global RNG. With ``checkpoints`` the loop saves its state after every epoch (learners, hooks,
generator, history, gradient scaler, RNG) and continues from ``resume`` bit for bit (on CPU) as if never interrupted.
Hook states are saved by hook type (``ClassName#n``), so a stateless hook added or removed between the interrupted
run and the resumed one (experiment tracking) does not stop the others from resuming.

Distributed (``dist.world_size = N > 1``, one process per rank, learners replicated through DDP): every rank draws
the whole global batch and runs the batch hooks on it identically (the generator never diverges), then trains on
its contiguous slice (``Shard``); the default reduction returns ``N * sum(rows_r) / batch_rows``, so DDP's gradient
average is the gradient of the global batch loss. A final batch with fewer rows than ranks is skipped (at most
``N - 1`` samples per epoch). Batch-norm layers normalise each rank's slice with its own batch statistics; the
buffers are rank 0's after every epoch. The figures of an epoch are summed over the ranks.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import Tensor

from compressor.distributed import DistInfo, Shard
from compressor.progress import progress_bar
from compressor.task import Task
from compressor.training.batch_source import ShuffledBatches
from compressor.training.checkpointing import EpochCheckpoints, EpochState, restore_rng, rng_state
from compressor.training.hooks import Batch, Hook
from compressor.training.learner import Learner
from compressor.training.precision import MixedPrecision


@dataclass
class History:
    """Per-epoch figures of the first learner (the others' in ``extra``, prefixed with their name)."""

    loss: list[float] = field(default_factory=list)
    accuracy: list[float] = field(default_factory=list)  # agreement with the given labels (``Task.fit_accuracy``)
    lr: list[float] = field(default_factory=list)
    extra: dict[str, list[float]] = field(default_factory=dict)
    selection: dict = field(default_factory=dict)  # which epoch's weights the model holds (``Validation``)
    precision: str = "fp32"  # the arithmetic the loop trained in (``fp32``, ``bf16``, ``fp16``)

    def log(self, **values: float) -> None:
        """Append one epoch's named figures to ``extra``."""
        for key, value in values.items():
            self.extra.setdefault(key, []).append(float(value))

    def as_dict(self) -> dict:
        """Every figure as one JSON-ready mapping of per-epoch lists."""
        return {"loss": self.loss, "accuracy": self.accuracy, "lr": self.lr, **self.extra}


class Loop:
    """Trains ``learners`` on ``batches`` for ``epochs`` epochs with ``hooks`` (see the module docstring).

    Args:
        learners: the models being trained, the main one first (its figures are the history's own).
        batches: the batch source (``ShuffledBatches``).
        hooks: the methods, in hook order (which is the order of their random draws).
        epochs: number of epochs.
        generator: source of every random choice of the loop; identical on every rank of a distributed run.
        task: what the learners predict (their training accuracy).
        device: where to train.
        description: progress-bar label.
        dist: this process's place in a distributed run in which the learners are replicated (None: alone).
        precision: ``auto``, ``fp32``, ``bf16`` or ``fp16`` (``compressor.training.precision``).
    """

    def __init__(self, learners: Sequence[Learner], batches: ShuffledBatches, hooks: Sequence[Hook], *, epochs: int,
                 generator: torch.Generator, task: Task, device: torch.device | str, description: str = "train",
                 dist: DistInfo | None = None, precision: str = "fp32"):
        self.learners, self.batches, self.hooks = list(learners), batches, list(hooks)
        self.epochs, self.generator, self.task, self.device = epochs, generator, task, device
        self.description = description
        self.dist = dist or DistInfo()
        self.shard = Shard(self.dist.rank, self.dist.world_size)
        self.amp = MixedPrecision(precision, device)
        self.history = History()
        self.epoch = 0  # the epoch being trained (0-based)
        self.step = 0  # steps before the current one, over all epochs
        self.stop = False  # set by a hook at the end of an epoch: no further epoch is trained (early stopping)

    @property
    def total_steps(self) -> int:
        """Steps of the whole training."""
        return self.epochs * self.batches.steps

    def hook(self, kind: type) -> Any:
        """The first hook of type ``kind`` (None when there is none)."""
        return next((h for h in self.hooks if isinstance(h, kind)), None)

    def fit(self, checkpoints: EpochCheckpoints | None = None, resume: EpochState | None = None) -> History:
        """Train every learner in place; returns the history (the learners are left in evaluation mode).

        Args:
            checkpoints: where to save the state at the end of every epoch (None: no checkpoints).
            resume: a state saved by an earlier run of the same loop: training continues with the epoch after it.
                The learners must be freshly built as in the saved run.
        """
        first = 0 if resume is None else self._restore(resume) + 1
        self.history.precision = self.amp.name
        self.amp.prepare(learner.model for learner in self.learners)
        for learner in self.learners:
            learner.wrap(self.device)
        for hook in self.hooks:
            hook.on_fit_start(self)
        steps = self.batches.steps
        with progress_bar(self.description, self.total_steps) as bar:
            bar.advance(first * steps)
            for epoch in range(first, self.epochs):
                self.epoch = epoch
                if self.stop:  # stopped early: a distributed teachers round still saves once per epoch on every rank
                    if checkpoints is not None and checkpoints.dist.enabled:
                        self._save(checkpoints)
                    bar.advance(steps)
                    continue
                for i, batch in enumerate(self.batches.epoch(self.generator, self.shard.world_size)):
                    self.step = self.epoch * steps + i
                    for hook in self.hooks:
                        hook.on_step_start(self)
                    if batch is not None:
                        self._step(batch)
                    bar.advance()
                self._end_epoch()
                bar.note(self._note())
                if checkpoints is not None:
                    self._save(checkpoints)
        self.amp.finish(learner.model for learner in self.learners)
        for learner in self.learners:
            learner.model.eval()
        for hook in self.hooks:
            hook.on_fit_end(self)
        return self.history

    def _note(self) -> str:
        """The progress bar's note after an epoch: training figures, and validation figures when measured."""
        note = f"loss {self.history.loss[-1]:.3f} acc {self.history.accuracy[-1]:.3f}"
        if "val_accuracy" in self.history.extra:
            note += f" val {self.history.extra['val_loss'][-1]:.3f} / {self.history.extra['val_accuracy'][-1]:.3f}"
        return note + (" (early stop)" if self.stop else "")

    def _step(self, batch: Batch) -> None:
        """One optimiser step of every learner on ``batch`` (the whole global batch)."""
        with self.amp.autocast():
            for hook in self.hooks:
                hook.on_batch(self, batch)
            batch_rows = len(batch)
            if self.dist.enabled:
                batch = batch.rows(*self.shard.bounds(batch_rows))
            inputs = self.amp.inputs(batch.inputs)
            outputs = [learner.forward(inputs) for learner in self.learners]
            total = outputs[0].new_zeros((), dtype=torch.float32)
            progress = (self.epoch + 1) / self.epochs  # t / Gamma in (0, 1] by epochs, for the supervised targets
            for i, (learner, logits) in enumerate(zip(self.learners, outputs, strict=True)):
                rows = learner.target.loss(logits, batch.targets, progress)
                for hook in self.hooks:
                    rows = hook.loss(self, i, batch, outputs, rows)
                loss, part = self._reduce(i, batch, rows, batch_rows)
                total = total + loss
                # part * batch_rows summed over the ranks and steps, divided by the rows, is the epoch's mean loss
                learner.log(loss=part * batch_rows,
                            acc=self.task.fit_accuracy(logits.detach(), batch.labels) * len(batch))
                learner.rows += len(batch)
        for learner in self.learners:
            learner.optimizer.zero_grad(set_to_none=True)
        self.amp.backward(total)  # the learners' graphs are disjoint (peers are detached), so one backward serves all
        self.amp.step([learner.optimizer for learner in self.learners])

    def _reduce(self, index: int, batch: Batch, rows: Tensor, batch_rows: int) -> tuple[Tensor, float]:
        """The loss to back-propagate and this rank's share of the batch loss (see ``Hook.reduce``)."""
        for hook in self.hooks:
            reduced = hook.reduce(self, index, batch, rows, batch_rows)
            if reduced is not None:
                return reduced
        if not self.dist.enabled:
            loss = rows.mean()
            return loss, float(loss.detach())
        part = rows.sum() / batch_rows
        return part * self.dist.world_size, float(part.detach())

    def _end_epoch(self) -> None:
        """Log every learner's figures, step the schedules, run the hooks' epoch end."""
        for learner in self.learners:
            learner.sync_buffers()
        for i, learner in enumerate(self.learners):
            learner.totals()
            figures = {"loss": learner.mean("loss"), "accuracy": learner.mean("acc"),
                       "lr": learner.optimizer.param_groups[0]["lr"]}
            for hook in self.hooks:
                figures.update(hook.epoch_figures(self, i))
            learner.end_epoch()
            if i == 0:
                self.history.loss.append(figures.pop("loss"))
                self.history.accuracy.append(figures.pop("accuracy"))
                self.history.lr.append(figures.pop("lr"))
                self.history.log(**figures)
            else:
                self.history.log(**{f"{learner.name}_{key}": value for key, value in figures.items()})
        for hook in self.hooks:
            hook.on_epoch_end(self)

    def _save(self, checkpoints: EpochCheckpoints) -> None:
        """The epoch checkpoint: replicated state once (rank 0's), each rank's RNG (and, alone, everything) by rank."""
        hooks = {key: state for key, hook in self._hook_keys() if (state := hook.state_dict()) is not None}
        state = {"learners": [learner.state() for learner in self.learners], "generator": self.generator.get_state(),
                 "hooks": hooks, "history": asdict(self.history), "scaler": self.amp.state_dict(),
                 "stopped": self.stop}
        own = {"rng": rng_state(self.device)}
        if self.dist.enabled:
            checkpoints.save(self.epoch, shared=state, own=own)
        else:
            checkpoints.save(self.epoch, own={**state, **own})

    def _restore(self, resume: EpochState) -> int:
        """Load a saved state (before the learners are wrapped); returns the epoch it was saved after."""
        state = resume.shared if self.dist.enabled else resume.own
        for learner, saved in zip(self.learners, state["learners"], strict=True):
            learner.restore(saved)
        for key, hook in self._hook_keys():
            if key in state["hooks"]:
                hook.load_state_dict(state["hooks"][key])
        self.generator.set_state(state["generator"])
        self.history = History(**state["history"])
        self.amp.load_state_dict(state["scaler"])
        self.stop = state["stopped"]
        restore_rng(resume.own["rng"], self.device)
        return resume.epoch

    def _hook_keys(self) -> list[tuple[str, Hook]]:
        """Each hook with its checkpoint key: its type's name and how many hooks of that type come before it."""
        seen: dict[str, int] = {}
        keys = []
        for hook in self.hooks:
            name = type(hook).__name__
            keys.append((f"{name}#{seen.get(name, 0)}", hook))
            seen[name] = seen.get(name, 0) + 1
        return keys
