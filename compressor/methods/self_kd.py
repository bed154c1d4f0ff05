"""Self-KD learning targets (CMD Table 2): CE, label smoothing, confidence penalty, Boot-soft, ProSelfLC, Mconf.

Each refines the annotated label ``q`` with the model's own prediction ``p`` (or the uniform ``u``) and trains on
the cross entropy ``H(q~, p)``:

| kind               | refined target ``q~``       | self trust ``eps``                                          |
|--------------------|-----------------------------|-------------------------------------------------------------|
| ce                 | ``q``                       | 0                                                           |
| label_smoothing    | ``(1 - eps) q + eps u``     | fixed                                                       |
| confidence_penalty | ``(1 - eps) q - eps p``     | fixed; ``H(-eps p, p) = -eps H(p)``, gradient through ``p`` |
| boot_soft          | ``(1 - eps) q + eps p``     | fixed                                                       |
| proselflc          | ``(1 - eps) q + eps p``     | ``g(t) l(p)``, ``g(t) = h(t / Gamma - 0.5, b1)``            |
| mconf              | ``(1 - eps) q + eps p``     | ``g(r) l(p)``, ``g(r) = h(r - rho, b1)``                    |

``l(p) = 1 - H(p) / H(u)`` is the sample's certainty; ``r = 1 - sum_i H(p_i) / (n H(u))`` the model's mean
certainty, taken over the previous epoch's training predictions (during the first epoch, over the batches seen so
far). Where ``p`` enters a target as knowledge (Boot-soft, ProSelfLC, Mconf) it is detached; the confidence penalty
differentiates through it, as a penalty.

Multi-label tasks use the same targets per class with Bernoulli distributions: binary cross entropy on the
refined 0/1 target, ``u = 0.5`` and ``H`` the mean binary entropy per class (``H(u) = log 2``).

The target is each learner's supervised term in the training loop (``compressor.training.learner``). In a
distributed run Mconf's running certainty counts every rank's rows.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from compressor.distributed import DistInfo
from compressor.methods.cmd import logistic
from compressor.spec.methods import TargetSpec
from compressor.task import Task


class SelfKDTarget:
    """The supervised term of a training loop, per row, for one ``TargetSpec`` (state: Mconf's certainty ``r``)."""

    def __init__(self, spec: TargetSpec, task: Task, num_classes: int, dist: DistInfo | None = None):
        self.spec, self.task, self.num_classes, self.dist = spec, task, num_classes, dist or DistInfo()
        self.max_entropy = task.uniform_entropy(num_classes)
        self._entropy_sum, self._rows = 0.0, 0  # this epoch's predictions (for Mconf)
        self._previous_certainty: float | None = None

    @property
    def certainty(self) -> float:
        """Mconf's ``r``: mean certainty of the previous epoch (of the batches so far in the first epoch)."""
        if self._previous_certainty is not None:
            return self._previous_certainty
        return 1.0 - self._entropy_sum / max(self._rows, 1) / self.max_entropy

    def end_epoch(self) -> None:
        """Close an epoch: its mean certainty becomes ``r`` for the next one."""
        if self._rows:
            self._previous_certainty = 1.0 - self._entropy_sum / self._rows / self.max_entropy
        self._entropy_sum, self._rows = 0.0, 0

    def state_dict(self) -> dict:
        """The running statistics (Mconf's certainty ``r``); everything else is fixed by the spec."""
        return {"entropy_sum": self._entropy_sum, "rows": self._rows, "previous_certainty": self._previous_certainty}

    def load_state_dict(self, state: dict) -> None:
        """Continue from a ``state_dict()``."""
        self._entropy_sum, self._rows = state["entropy_sum"], state["rows"]
        self._previous_certainty = state["previous_certainty"]

    def _count(self, entropy: Tensor) -> None:
        """Add a batch's prediction entropies to the epoch's statistics (every rank's, in a distributed run)."""
        before, after = self._entropy_sum, self._entropy_sum + float(entropy.sum())
        if not self.dist.enabled:
            self._entropy_sum, self._rows = after, self._rows + int(entropy.numel())
            return
        delta, rows = self.dist.sum([after - before, entropy.numel()], entropy.device)
        self._entropy_sum, self._rows = before + delta, self._rows + int(rows)

    def trust(self, logits: Tensor, progress: float) -> Tensor:
        """Per-row self trust ``eps`` in [0, 1] (detached) at training progress ``t / Gamma``."""
        spec = self.spec
        rows = logits.shape[0]
        if spec.kind == "ce":
            return logits.new_zeros(rows)
        if spec.kind in ("label_smoothing", "confidence_penalty", "boot_soft"):
            return logits.new_full((rows,), spec.epsilon)
        certainty = (1.0 - self.task.entropy(logits.detach()) / self.max_entropy).clamp(0.0, 1.0)
        if spec.kind == "proselflc":
            return logistic(progress - 0.5, spec.b1) * certainty
        return logistic(self.certainty - spec.rho, spec.b1) * certainty  # mconf

    def loss(self, logits: Tensor, targets: Tensor, progress: float) -> Tensor:
        """Per-row loss ``H(q~, p)`` of ``logits`` against the given ``targets`` (class indices or 0/1 rows)."""
        kind, multilabel = self.spec.kind, self.task.multilabel
        if kind == "mconf":
            self._count(self.task.entropy(logits.detach()))
        hard = self.task.loss(logits, targets)
        if kind == "ce":
            return hard
        eps = self.trust(logits, progress)
        if kind == "confidence_penalty":
            return (1.0 - eps) * hard - eps * self.task.entropy(logits)
        if multilabel:
            targets = targets.float()
            other = torch.full_like(targets, 0.5) if kind == "label_smoothing" else torch.sigmoid(logits.detach())
            refined = (1.0 - eps)[:, None] * targets + eps[:, None] * other
            return F.binary_cross_entropy_with_logits(logits, refined, reduction="none").mean(-1)
        log_p = F.log_softmax(logits, dim=-1)
        onehot = F.one_hot(targets, logits.shape[-1]).to(log_p.dtype)
        other = torch.full_like(onehot, 1.0 / logits.shape[-1]) if kind == "label_smoothing" else log_p.detach().exp()
        refined = (1.0 - eps)[:, None] * onehot + eps[:, None] * other
        return -(refined * log_p).sum(-1)
