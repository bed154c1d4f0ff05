"""Supervised training of one classifier on (noisy) labels: the teachers.

The loss is the self-KD target of ``spec.target`` (CE by default, see ``compressor.methods.self_kd``) on the
batch's labels, after messy collaboration when a rate is given (MC-T). With ``checkpoints`` the loop saves its whole
state at the end of every epoch (model, optimiser, schedule, batch generator, torch RNG, target statistics, history)
and continues from ``resume`` exactly where the saved run stopped.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from compressor.data.types import Split
from compressor.methods.messy import messy_targets
from compressor.methods.self_kd import SelfKDTarget
from compressor.progress import progress_bar
from compressor.spec.training import TrainSpec
from compressor.training.batches import augment, batch_indices, to_float
from compressor.training.checkpointing import (
    EpochCheckpoints,
    EpochState,
    cpu_copy,
    restore_rng,
    restore_target,
    rng_state,
    target_state,
)
from compressor.training.losses import labels_tensor
from compressor.training.optim import build_optimizer, build_scheduler


@dataclass
class History:
    """Per-epoch training figures."""

    loss: list[float] = field(default_factory=list)
    accuracy: list[float] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)
    extra: dict[str, list[float]] = field(default_factory=dict)

    def log(self, **values: float) -> None:
        """Append one epoch's named figures to ``extra``."""
        for key, value in values.items():
            self.extra.setdefault(key, []).append(float(value))

    def as_dict(self) -> dict:
        """Every figure as one JSON-ready mapping of per-epoch lists."""
        return {"loss": self.loss, "accuracy": self.accuracy, "lr": self.lr, **self.extra}

    def state(self) -> dict:
        """The history as plain lists (for a checkpoint)."""
        return {"loss": list(self.loss), "accuracy": list(self.accuracy), "lr": list(self.lr),
                "extra": {k: list(v) for k, v in self.extra.items()}}

    @classmethod
    def from_state(cls, state: dict) -> History:
        """The history saved by ``state``."""
        return cls(list(state["loss"]), list(state["accuracy"]), list(state["lr"]),
                   {k: list(v) for k, v in state["extra"].items()})


def batch_accuracy(logits: torch.Tensor, targets: torch.Tensor, task: str) -> float:
    """Share of correct predictions against the (possibly noisy) training targets."""
    if task == "multilabel":
        return float(((logits > 0).float() == targets).float().mean())
    return float((logits.argmax(1) == targets).float().mean())


@torch.no_grad()
def output_size(model: torch.nn.Module, data: Split, device: torch.device | str) -> int:
    """Number of outputs (classes or labels) of ``model``, read from one evaluation-mode forward pass."""
    was_training = model.training
    model.to(device).eval()
    size = int(model(to_float(data.images[:1], device)).shape[-1])
    model.train(was_training)
    return size


def train_supervised(
    model: torch.nn.Module,
    data: Split,
    spec: TrainSpec,
    task: str,
    device: torch.device | str,
    generator: torch.Generator,
    description: str = "train",
    messy_rate: float = 0.0,
    checkpoints: EpochCheckpoints | None = None,
    resume: EpochState | None = None,
) -> History:
    """Train ``model`` in place on ``data`` with its learning target (CE / BCE by default) following ``spec``.

    Args:
        model: the classifier (trained in place, left in eval mode).
        data: training split with (noisy) labels.
        spec: epochs, batch size, optimiser, schedule, augmentation and learning target.
        task: ``"multiclass"`` or ``"multilabel"``.
        device: where to train.
        generator: source of the batch order, augmentation and messy-collaboration draws.
        description: progress-bar label.
        messy_rate: messy collaboration rate (MC-T): share of targets replaced by a wrong class in every batch.
        checkpoints: where to save the state at the end of each epoch (its ``own`` part; None: no checkpoints).
        resume: a state saved by an earlier run of the same loop (its ``own`` part is this loop's): training
            continues with the epoch after it. ``model`` must be freshly built as in the saved run.

    Returns:
        The per-epoch history (mean loss, accuracy on the given labels, learning rate, share of messy targets).
    """
    model.to(device).train()
    optimizer = build_optimizer(model.parameters(), spec.optimizer)
    scheduler = build_scheduler(optimizer, spec.schedule, spec.epochs)
    num_classes = output_size(model, data, device)
    target = SelfKDTarget(spec.target, task, num_classes)
    history = History()
    first = 0
    if resume is not None:
        saved = resume.own
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        generator.set_state(saved["generator"])
        restore_target(target, saved["target"])
        restore_rng(saved["rng"], device)
        history = History.from_state(saved["history"])
        first = resume.epoch + 1
    steps = -(-len(data) // spec.batch_size)
    with progress_bar(description, spec.epochs * steps) as bar:
        bar.advance(first * steps)
        for epoch in range(first, spec.epochs):
            total_loss, total_acc, corrupted, seen = 0.0, 0.0, 0.0, 0
            for idx in batch_indices(len(data), spec.batch_size, generator):
                x = augment(to_float(data.images[idx], device, data.window), spec.augment, generator)
                y = labels_tensor(data.labels[idx.numpy()], device, task)
                fit, changed = messy_targets(y, num_classes, messy_rate, task, generator)
                logits = model(x)
                loss = target.loss(logits, fit, (epoch + 1) / spec.epochs).mean()
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                total_loss += float(loss.detach()) * len(idx)
                total_acc += batch_accuracy(logits.detach(), y, task) * len(idx)
                corrupted += float(changed.sum())
                seen += len(idx)
                bar.advance()
            history.loss.append(total_loss / seen)
            history.accuracy.append(total_acc / seen)
            history.lr.append(optimizer.param_groups[0]["lr"])
            if messy_rate > 0:
                history.log(messy_rate=corrupted / seen)
            bar.note(f"loss {history.loss[-1]:.3f} acc {history.accuracy[-1]:.3f}")
            scheduler.step()
            target.end_epoch()
            if checkpoints is not None:
                checkpoints.save(epoch, own={
                    "model": cpu_copy(model.state_dict()), "optimizer": cpu_copy(optimizer.state_dict()),
                    "scheduler": scheduler.state_dict(), "generator": generator.get_state(),
                    "target": target_state(target), "rng": rng_state(device), "history": history.state(),
                })
    model.eval()
    return history


def subset_noise_rate(data: Split, index: np.ndarray) -> float:
    """Share of corrupted labels among the samples ``index`` (0 when no noise was injected)."""
    return float(data.noise_mask[index].mean()) if len(index) else 0.0
