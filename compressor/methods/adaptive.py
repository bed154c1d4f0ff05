"""Baseline IV's adaptive per-sample teacher weights: a stand-in for the RL teacher selector of RoS-KD's [15].

The paper's Baseline IV learns, with reinforcement learning, how much to trust each teacher on each sample. Here
each teacher's weight on a sample is its confidence in the sample's given (noisy) label, softmax-normalised over
the teachers:

    conf[k, b] = p_k(y_b | x_b)                              (multiclass: softmax of teacher k's logits at y_b)
    conf[k, b] = mean_c p_k(y_bc | x_b)                      (multilabel: mean Bernoulli likelihood of the labels)
    w[k, b]    = softmax_k(log conf[k, b] / T)

With ``T = 1`` the weights are proportional to the confidences; ``T -> inf`` gives equal weights and ``T -> 0``
picks the most confident teacher. No policy is learned: this is a cheap, deterministic proxy of "trust the teacher
that agrees with the label here", documented as such in ``docs/methods.md``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from compressor.task import Task


def log_label_confidence(teacher_logits: Tensor, labels: Tensor, task: Task) -> Tensor:
    """``[K, B]`` log of each teacher's probability of the given labels (see the module docstring)."""
    t = teacher_logits.float()
    if task.multilabel:
        y = labels.float()[None]  # [1, B, C]
        # log of the Bernoulli likelihood per class: y log s(z) + (1 - y) log s(-z), averaged in probability space.
        likelihood = (y * F.logsigmoid(t) + (1 - y) * F.logsigmoid(-t)).exp().mean(-1)
        return likelihood.clamp_min(1e-12).log()
    log_probs = F.log_softmax(t, dim=-1)  # [K, B, C]
    index = labels.long()[None, :, None].expand(t.shape[0], -1, 1)
    return log_probs.gather(-1, index).squeeze(-1)


def adaptive_weights(teacher_logits: Tensor, labels: Tensor, task: Task, temperature: float = 1.0) -> Tensor:
    """``[K, B]`` weights summing to one over teachers: ``softmax_k(log conf[k, b] / temperature)``."""
    return torch.softmax(log_label_confidence(teacher_logits, labels, task) / temperature, dim=0)
