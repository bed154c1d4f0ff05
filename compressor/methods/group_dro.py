"""GroupDistil (Vilouras et al., Algorithm 1): group distributionally robust distillation.

The student minimises ``sum_d w_d L_d`` where ``L_d`` is the mean distillation loss (``alpha`` KD + ``1 - alpha``
supervised term, Eq. 1) over the batch's samples of group ``d``. Before each student step the group weights take
an exponentiated-gradient ascent step on the same losses,

    w_d <- w_d * exp(eta_w * L_d),   w <- w / sum_d w_d,

so groups on which the student does badly gain weight. As in groupDRO's batched form, a group absent from the
batch has ``L_d = 0`` for that step (its weight is not raised). Weights start uniform and are kept per learner.

Spec: ``distillation.group_dro``. In a distributed run the group losses are those of the global batch: each rank's
per-group sums and counts are added up over the ranks, the weights step identically on every rank, and the rank's
loss is ``sum_d w_d S_rd / n_d`` (its per-group sums ``S_rd``, the global counts ``n_d``), times the world size as
DDP averages gradients. The history logs ``group_weight_<d>`` per epoch.
"""

from __future__ import annotations

import torch
from torch import Tensor

from compressor.distributed import all_reduce_sum
from compressor.methods.registry import MethodContext, register_method
from compressor.training.hooks import Hook


def group_mean_losses(rows: Tensor, groups: Tensor, num_groups: int) -> tuple[Tensor, Tensor]:
    """``(mean loss per group [G], samples per group [G])``; empty groups have loss 0 (and keep the graph)."""
    one_hot = torch.nn.functional.one_hot(groups.long(), num_groups).to(rows.dtype)  # [B, G]
    counts = one_hot.sum(0)
    sums = one_hot.t() @ rows
    return sums / counts.clamp_min(1.0), counts


class GroupWeights:
    """Exponentiated-gradient group weights ``w`` (a probability vector over ``num_groups`` groups)."""

    def __init__(self, num_groups: int, eta_w: float, device: torch.device | str = "cpu"):
        self.num_groups, self.eta_w = num_groups, eta_w
        self.weights = torch.full((num_groups,), 1.0 / num_groups, device=device)

    @torch.no_grad()
    def update(self, group_losses: Tensor) -> None:
        """One ascent step ``w_d <- w_d exp(eta_w L_d)``, renormalised (computed in log space for stability)."""
        logits = self.weights.log() + self.eta_w * group_losses.detach().to(self.weights)
        self.weights = torch.softmax(logits, dim=0)

    def reduce(self, rows: Tensor, groups: Tensor) -> Tensor:
        """Update the weights on this batch's per-group losses, then return the robust loss ``sum_d w_d L_d``."""
        losses, _ = group_mean_losses(rows, groups, self.num_groups)
        self.update(losses)
        return (self.weights.to(losses) * losses).sum()


class GroupDRO(Hook):
    """Reduces each learner's rows to GroupDistil's robust loss with that learner's own group weights."""

    def __init__(self, learners: int, num_groups: int, eta_w: float, device: torch.device | str):
        self.weights = [GroupWeights(num_groups, eta_w, device) for _ in range(learners)]

    def reduce(self, loop, index, batch, rows, batch_rows):
        weights = self.weights[index]
        if not loop.dist.enabled:
            loss = weights.reduce(rows, batch.groups)
            return loss, float(loss.detach())
        g = weights.num_groups
        one_hot = torch.nn.functional.one_hot(batch.groups.long(), g).to(rows.dtype)  # [B_r, G]
        sums, counts = one_hot.t() @ rows, one_hot.sum(0)  # this rank's per-group loss sums and row counts
        totals = all_reduce_sum(torch.cat([sums.detach(), counts]).double())
        global_counts = totals[g:].clamp_min(1.0)
        weights.update((totals[:g] / global_counts).to(rows.dtype))
        part = (weights.weights.to(rows) * sums / global_counts.to(rows)).sum()
        return part * loop.dist.world_size, float(part.detach())

    def epoch_figures(self, loop, index) -> dict[str, float]:
        return {f"group_weight_{d}": float(w) for d, w in enumerate(self.weights[index].weights.tolist())}

    def state_dict(self) -> list[Tensor]:
        return [w.weights.detach().to("cpu", copy=True) for w in self.weights]

    def load_state_dict(self, state: list[Tensor]) -> None:
        for weights, saved in zip(self.weights, state, strict=True):
            weights.weights = saved.to(weights.weights.device)


@register_method("group_dro", order=70, builtin=True)
def _group_dro(ctx: MethodContext, params: dict) -> Hook | None:
    if ctx.distill is None or not ctx.distill.group_dro.enabled:
        return None
    if ctx.data.groups is None:
        raise ValueError("distillation.group_dro needs group labels for the training samples; the data has none")
    return GroupDRO(len(ctx.learners), int(ctx.data.groups.max()) + 1, ctx.distill.group_dro.eta_w, ctx.device)
