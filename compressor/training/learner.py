"""One model being trained by distillation: its optimiser, schedule, learning target, group weights and figures.

The distillation loop holds a list of learners: the student alone, or the student and its peer in CMD's mutual
distillation. Everything that changes while a learner trains lives on its ``Learner`` object, so the loop keeps no
hidden state of its own, and ``state()`` / ``restore()`` move all of it in and out of a checkpoint.

In a distributed run each learner's forward pass goes through ``DistributedDataParallel`` and every rank holds a
slice of each global batch. ``reduce`` then returns this rank's share of the *global* batch loss, scaled by the world
size so that DDP's gradient average equals the gradient of the global loss (see ``reduce``); the per-epoch figures
and Mconf's certainty statistics are summed over the ranks.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from compressor.distributed import DistInfo, all_reduce_sum, broadcast_tensors_
from compressor.methods.group_dro import GroupWeights
from compressor.methods.self_kd import SelfKDTarget
from compressor.spec.methods import GroupDROSpec
from compressor.spec.training import TrainSpec
from compressor.task import Task
from compressor.training.checkpointing import cpu_copy, restore_target, target_state
from compressor.training.optim import build_optimizer, build_scheduler

FIGURES = ("loss", "kd", "ce", "acc", "kept", "judged", "exchange_kept", "exchange_judged", "corrupted")


@dataclass
class Learner:
    """A model with its optimiser, per-epoch schedule, self-KD target, optional group weights and epoch sums."""

    name: str
    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    target: SelfKDTarget
    group_weights: GroupWeights | None = None
    sums: dict[str, float] = field(default_factory=lambda: dict.fromkeys(FIGURES, 0.0))
    rows: int = 0
    dist: DistInfo = field(default_factory=DistInfo)
    network: nn.Module | None = None  # what the forward pass calls: the model, or its DDP wrapper
    log_messy: bool = False  # messy collaboration is on: log messy_rate every epoch (also an epoch without changes)

    @classmethod
    def create(
        cls, name: str, model: nn.Module, train: TrainSpec, task: Task, num_classes: int, group_dro: GroupDROSpec,
        num_groups: int, device: torch.device | str, dist: DistInfo | None = None,
    ) -> Learner:
        """A learner for ``model`` (moved to ``device``, in training mode) trained following ``train``."""
        model.to(device).train()
        optimizer = build_optimizer(model.parameters(), train.optimizer)
        scheduler = build_scheduler(optimizer, train.schedule, train.epochs)
        weights = GroupWeights(num_groups, group_dro.eta_w, device) if group_dro.enabled else None
        return cls(name, model, optimizer, scheduler, SelfKDTarget(train.target, task, num_classes), weights,
                   dist=dist or DistInfo())

    def wrap(self, device: torch.device | str) -> None:
        """Route the forward pass through ``DistributedDataParallel`` (distributed runs; after ``restore``)."""
        if not self.dist.enabled:
            self.network = self.model
            return
        from torch.nn.parallel import DistributedDataParallel

        device = torch.device(device)
        ids = [device] if device.type == "cuda" else None
        self.network = DistributedDataParallel(self.model, device_ids=ids)

    def forward(self, x: Tensor) -> Tensor:
        """Logits of ``x`` (through DDP in a distributed run)."""
        return (self.network or self.model)(x)

    def supervised(self, logits: Tensor, targets: Tensor, progress: float) -> Tensor:
        """Per-row self-KD target loss; Mconf's running certainty counts every rank's rows."""
        if not (self.dist.enabled and self.target.spec.kind == "mconf"):
            return self.target.loss(logits, targets, progress)
        before = target_state(self.target)
        rows = self.target.loss(logits, targets, progress)
        after = target_state(self.target)
        delta = torch.tensor([after["_entropy_sum"] - before["_entropy_sum"], after["_rows"] - before["_rows"]],
                             dtype=torch.float64, device=logits.device)
        all_reduce_sum(delta)
        restore_target(self.target, {**after, "_entropy_sum": before["_entropy_sum"] + float(delta[0]),
                                     "_rows": before["_rows"] + int(delta[1])})
        return rows

    def reduce(self, rows: Tensor, groups: Tensor | None, batch_rows: int | None = None) -> tuple[Tensor, float]:
        """The loss to back-propagate from per-row losses, and this rank's share of the batch loss.

        Single process: the mean of ``rows``, or GroupDistil's ``sum_d w_d L_d`` (after a step of ``w``).
        Distributed, with ``rows`` this rank's slice of a global batch of ``batch_rows`` rows: the global mean is
        ``sum_r part_r`` with ``part_r = sum(rows_r) / batch_rows`` (GroupDistil: ``sum_d w_d S_rd / n_d`` with the
        per-group sums ``S_rd`` of this rank and the global group counts ``n_d``, and ``w`` stepped on the global
        group means, identically on every rank). DDP averages gradients over the ``N`` ranks, so the loss to
        back-propagate is ``N * part_r``: the average of those gradients is the gradient of the global loss.

        Returns:
            ``(loss to back-propagate, part_r)``; in a single process both are the batch loss.
        """
        if self.group_weights is not None and groups is None:
            raise ValueError("GroupDistil needs a group label for every training sample")
        if not self.dist.enabled:
            loss = rows.mean() if self.group_weights is None else self.group_weights.reduce(rows, groups)
            return loss, float(loss.detach())
        if self.group_weights is None:
            part = rows.sum() / batch_rows
        else:
            g = self.group_weights.num_groups
            one_hot = torch.nn.functional.one_hot(groups.long(), g).to(rows.dtype)  # [B_r, G]
            sums, counts = one_hot.t() @ rows, one_hot.sum(0)  # this rank's per-group loss sums and row counts
            totals = all_reduce_sum(torch.cat([sums.detach(), counts]).double())
            global_counts = totals[g:].clamp_min(1.0)
            self.group_weights.update((totals[:g] / global_counts).to(rows.dtype))
            part = (self.group_weights.weights.to(rows) * sums / global_counts.to(rows)).sum()
        return part * self.dist.world_size, float(part.detach())

    def add(self, rows: int, **figures: float) -> None:
        """Accumulate one batch's figures (already summed over its rows, or counts)."""
        for key, value in figures.items():
            self.sums[key] += float(value)
        self.rows += rows

    def sync_buffers(self) -> None:
        """Give every rank rank 0's buffers (batch-norm statistics drift apart in the last step of an epoch)."""
        if self.dist.enabled:
            broadcast_tensors_(list(self.model.buffers()))

    def close_epoch(self) -> dict[str, float]:
        """This epoch's means (and gate counts), then reset the sums; steps the schedule and the target's state."""
        if self.dist.enabled:  # every rank's rows count: sum the figures over the ranks
            device = next(self.model.parameters()).device
            totals = all_reduce_sum(torch.tensor([self.sums[k] for k in FIGURES] + [self.rows], dtype=torch.float64,
                                                 device=device)).tolist()
            self.sums, self.rows = dict(zip(FIGURES, totals[:-1], strict=True)), int(totals[-1])
        n = max(self.rows, 1)
        s = self.sums
        figures = {
            "loss": s["loss"] / n, "accuracy": s["acc"] / n, "kd": s["kd"] / n, "ce": s["ce"] / n,
            "lr": self.optimizer.param_groups[0]["lr"],
        }
        if self.log_messy:
            figures["messy_rate"] = s["corrupted"] / n
        if s["judged"]:
            figures.update(gate_pass_rate=s["kept"] / s["judged"], gate_passed=s["kept"])
        if s["exchange_judged"]:
            figures.update(exchange_pass_rate=s["exchange_kept"] / s["exchange_judged"],
                           exchange_passed=s["exchange_kept"])
        if self.group_weights is not None:
            figures.update({f"group_weight_{d}": float(w) for d, w in enumerate(self.group_weights.weights.tolist())})
        self.sums, self.rows = dict.fromkeys(FIGURES, 0.0), 0
        self.scheduler.step()
        self.target.end_epoch()
        return figures

    def state(self) -> dict:
        """Everything that changes while the learner trains (between epochs), for a checkpoint."""
        return {
            "model": cpu_copy(self.model.state_dict()), "optimizer": cpu_copy(self.optimizer.state_dict()),
            "scheduler": self.scheduler.state_dict(), "target": target_state(self.target),
            "group_weights": None if self.group_weights is None else cpu_copy(self.group_weights.weights),
        }

    def restore(self, state: dict) -> None:
        """Continue from ``state()`` (call before ``wrap``)."""
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        restore_target(self.target, state["target"])
        if self.group_weights is not None:
            self.group_weights.weights = state["group_weights"].to(self.group_weights.weights.device)
