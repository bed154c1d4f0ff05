"""GroupDistil (Vilouras et al., Algorithm 1): group distributionally robust distillation.

The student minimises ``sum_d w_d L_d`` where ``L_d`` is the mean distillation loss (``alpha`` KD + ``1 - alpha``
supervised term, Eq. 1) over the batch's samples of group ``d``. Before each student step the group weights take
an exponentiated-gradient ascent step on the same losses,

    w_d <- w_d * exp(eta_w * L_d),   w <- w / sum_d w_d,

so groups on which the student does badly gain weight. As in groupDRO's batched form, a group absent from the
batch has ``L_d = 0`` for that step (its weight is not raised). Weights start uniform and are kept per learner.
"""

from __future__ import annotations

import torch
from torch import Tensor


def group_mean_losses(rows: Tensor, groups: Tensor, num_groups: int) -> tuple[Tensor, Tensor]:
    """``(mean loss per group [G], samples per group [G])``; empty groups have loss 0 (and keep the graph)."""
    one_hot = torch.nn.functional.one_hot(groups.long(), num_groups).to(rows.dtype)  # [B, G]
    counts = one_hot.sum(0)
    sums = one_hot.t() @ rows
    return sums / counts.clamp_min(1.0), counts


class GroupWeights:
    """Exponentiated-gradient group weights ``w`` (a probability vector over ``num_groups`` groups)."""

    def __init__(self, num_groups: int, eta_w: float, device: torch.device | str = "cpu"):
        if num_groups < 1:
            raise ValueError(f"group weights need at least one group, got {num_groups}")
        if eta_w <= 0:
            raise ValueError(f"eta_w must be > 0, got {eta_w}")
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
