"""One model being trained by distillation: its optimiser, schedule, learning target, group weights and figures.

The distillation loop holds a list of learners: the student alone, or the student and its peer in CMD's mutual
distillation. Everything that changes while a learner trains lives on its ``Learner`` object, so the loop keeps no
hidden state of its own.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from compressor.methods.group_dro import GroupWeights
from compressor.methods.self_kd import SelfKDTarget
from compressor.spec.methods import GroupDROSpec
from compressor.spec.training import TrainSpec
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

    @classmethod
    def create(
        cls, name: str, model: nn.Module, train: TrainSpec, task: str, num_classes: int, group_dro: GroupDROSpec,
        num_groups: int, device: torch.device | str,
    ) -> Learner:
        """A learner for ``model`` (moved to ``device``, in training mode) trained following ``train``."""
        model.to(device).train()
        optimizer = build_optimizer(model.parameters(), train.optimizer)
        scheduler = build_scheduler(optimizer, train.schedule, train.epochs)
        weights = GroupWeights(num_groups, group_dro.eta_w, device) if group_dro.enabled else None
        return cls(name, model, optimizer, scheduler, SelfKDTarget(train.target, task, num_classes), weights)

    def reduce(self, rows: Tensor, groups: Tensor | None) -> Tensor:
        """The batch loss from per-row losses: their mean, or GroupDistil's ``sum_d w_d L_d`` (after a w step)."""
        if self.group_weights is None:
            return rows.mean()
        if groups is None:
            raise ValueError("GroupDistil needs a group label for every training sample")
        return self.group_weights.reduce(rows, groups)

    def add(self, rows: int, **figures: float) -> None:
        """Accumulate one batch's figures (already summed over its rows, or counts)."""
        for key, value in figures.items():
            self.sums[key] += float(value)
        self.rows += rows

    def close_epoch(self) -> dict[str, float]:
        """This epoch's means (and gate counts), then reset the sums; steps the schedule and the target's state."""
        n = max(self.rows, 1)
        s = self.sums
        figures = {
            "loss": s["loss"] / n, "accuracy": s["acc"] / n, "kd": s["kd"] / n, "ce": s["ce"] / n,
            "lr": self.optimizer.param_groups[0]["lr"],
        }
        if s["corrupted"]:
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
