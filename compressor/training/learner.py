"""One model being trained: its optimiser, per-epoch schedule, supervised target and the epoch's running sums.

The training loop holds a list of learners: a teacher alone, the student alone, or the student and its peer in
CMD's mutual distillation. Everything that changes while a learner trains lives on its ``Learner`` object, and
``state()`` / ``restore()`` move all of it in and out of a checkpoint.

The supervised ``target`` is any object with ``loss(logits, targets, progress) -> [B]``, ``end_epoch()``,
``state_dict()`` and ``load_state_dict(state)`` (``compressor.methods.self_kd.SelfKDTarget``).

In a distributed run each learner's forward pass goes through ``DistributedDataParallel`` and every rank holds a
slice of each global batch; the per-epoch sums are added up over the ranks (``totals``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from compressor.distributed import DistInfo, broadcast_tensors_
from compressor.spec.training import TrainSpec
from compressor.training.checkpointing import cpu_copy
from compressor.training.optim import build_optimizer, build_scheduler


@dataclass
class Learner:
    """A model with its optimiser, per-epoch schedule, supervised target and this epoch's figure sums."""

    name: str
    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    target: Any
    dist: DistInfo = field(default_factory=DistInfo)
    network: nn.Module | None = None  # the model's DDP wrapper in a distributed run (``wrap``)
    sums: dict[str, float] = field(default_factory=dict)  # this epoch's figures, summed over its rows
    rows: int = 0  # training rows seen this epoch

    @classmethod
    def create(cls, name: str, model: nn.Module, train: TrainSpec, target: Any, device: torch.device | str,
               dist: DistInfo | None = None) -> Learner:
        """A learner for ``model`` (moved to ``device``, in training mode) trained following ``train``."""
        model.to(device).train()
        optimizer = build_optimizer(model.parameters(), train.optimizer)
        scheduler = build_scheduler(optimizer, train.schedule, train.epochs)
        return cls(name, model, optimizer, scheduler, target, dist=dist or DistInfo())

    def wrap(self, device: torch.device | str) -> None:
        """Route the forward pass through ``DistributedDataParallel`` (distributed runs; after ``restore``)."""
        if self.dist.enabled:
            from torch.nn.parallel import DistributedDataParallel

            device = torch.device(device)
            self.network = DistributedDataParallel(self.model, device_ids=[device] if device.type == "cuda" else None)

    def forward(self, x: Tensor) -> Tensor:
        """Logits of ``x`` (through DDP in a distributed run)."""
        return (self.network or self.model)(x)

    def log(self, **sums: float) -> None:
        """Add one batch's figures (summed over its rows, or counts) to the epoch's sums."""
        for key, value in sums.items():
            self.sums[key] = self.sums.get(key, 0.0) + float(value)

    def mean(self, key: str) -> float:
        """The epoch's sum of ``key`` per training row (0 when nothing was logged)."""
        return self.sums.get(key, 0.0) / max(self.rows, 1)

    def totals(self) -> None:
        """Add up the epoch's sums and rows over the ranks (distributed runs; every rank calls it)."""
        keys = sorted(self.sums)
        totals = self.dist.sum([self.sums[k] for k in keys] + [self.rows], next(self.model.parameters()).device)
        self.sums, self.rows = dict(zip(keys, totals[:-1], strict=True)), int(totals[-1])

    def end_epoch(self) -> None:
        """Reset the sums and step the schedule and the target's per-epoch state."""
        self.sums, self.rows = {}, 0
        self.scheduler.step()
        self.target.end_epoch()

    def sync_buffers(self) -> None:
        """Give every rank rank 0's buffers (batch-norm statistics drift apart in the last step of an epoch)."""
        if self.dist.enabled:
            broadcast_tensors_(list(self.model.buffers()))

    def state(self) -> dict:
        """Everything that changes while the learner trains (between epochs), for a checkpoint."""
        return {"model": cpu_copy(self.model.state_dict()), "optimizer": cpu_copy(self.optimizer.state_dict()),
                "scheduler": self.scheduler.state_dict(), "target": self.target.state_dict()}

    def restore(self, state: dict) -> None:
        """Continue from ``state()`` (call before ``wrap``)."""
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.target.load_state_dict(state["target"])
