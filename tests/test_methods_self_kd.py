"""Self-KD targets (CMD Table 2) against hand-computed references, multiclass and multi-label."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from compressor.methods.cmd import logistic
from compressor.methods.self_kd import SelfKDTarget
from compressor.spec.methods import TargetSpec
from compressor.task import Task


def _inputs(task: str, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(6, 5, generator=g) * 2
    if task == Task.MULTILABEL:
        return logits, (torch.rand(6, 5, generator=g) < 0.4).float()
    return logits, torch.randint(0, 5, (6,), generator=g)


def _soft_ce(logits, target):
    return -(target * F.log_softmax(logits, -1)).sum(-1)


@pytest.mark.parametrize("task", list(Task))
def test_ce_is_the_plain_supervised_loss(task):
    logits, y = _inputs(task)
    target = SelfKDTarget(TargetSpec(), task, 5)
    assert torch.equal(target.loss(logits, y, 0.5), task.loss(logits, y))


def test_multiclass_targets_match_table_2():
    logits, y = _inputs(Task.MULTICLASS)
    q = F.one_hot(y, 5).float()
    p = logits.softmax(-1)
    eps = 0.2
    loss = lambda kind, progress=0.5: SelfKDTarget(TargetSpec(kind=kind, epsilon=eps), Task.MULTICLASS, 5).loss(  # noqa: E731
        logits, y, progress)
    assert torch.allclose(loss("label_smoothing"), F.cross_entropy(logits, y, label_smoothing=eps, reduction="none"))
    assert torch.allclose(loss("boot_soft"), _soft_ce(logits, (1 - eps) * q + eps * p), atol=1e-6)
    penalised = (1 - eps) * F.cross_entropy(logits, y, reduction="none") - eps * Task.MULTICLASS.entropy(logits)
    assert torch.allclose(loss("confidence_penalty"), penalised)
    # ProSelfLC: eps = h(t/Gamma - 0.5, b1) * (1 - H(p)/H(u)), rising with training progress
    certainty = 1 - Task.MULTICLASS.entropy(logits) / math.log(5)
    for progress in (0.1, 0.9):
        trust = logistic(progress - 0.5, 16.0) * certainty
        expected = _soft_ce(logits, (1 - trust[:, None]) * q + trust[:, None] * p)
        assert torch.allclose(loss("proselflc", progress), expected, atol=1e-6)
    target = SelfKDTarget(TargetSpec(kind="proselflc"), Task.MULTICLASS, 5)
    assert target.trust(logits, 0.9).mean() > 10 * target.trust(logits, 0.1).mean()


def test_boot_soft_treats_the_prediction_as_a_target_and_cp_as_a_penalty():
    logits, y = _inputs(Task.MULTICLASS)
    eps = 0.3
    q = F.one_hot(y, 5).float()
    x = logits.clone().requires_grad_(True)
    SelfKDTarget(TargetSpec(kind="boot_soft", epsilon=eps), Task.MULTICLASS, 5).loss(x, y, 0.5).sum().backward()
    p = logits.softmax(-1)
    assert torch.allclose(x.grad, p - ((1 - eps) * q + eps * p), atol=1e-6)  # d/dz H(t, softmax z) = p - t, t fixed
    x = logits.clone().requires_grad_(True)
    penalty = SelfKDTarget(TargetSpec(kind="confidence_penalty", epsilon=eps), Task.MULTICLASS, 5)
    penalty.loss(x, y, 0.5).sum().backward()
    z = logits.clone().requires_grad_(True)
    ((1 - eps) * F.cross_entropy(z, y, reduction="none") - eps * Task.MULTICLASS.entropy(z)).sum().backward()
    assert torch.allclose(x.grad, z.grad) and not torch.allclose(x.grad, (1 - eps) * (p - q), atol=1e-3)


def test_mconf_trusts_the_model_by_its_mean_certainty_of_the_previous_epoch():
    confident = torch.tensor([[8.0, 0, 0, 0, 0]]).repeat(4, 1)
    unsure = torch.zeros(4, 5) + torch.tensor([0.3, 0, 0, 0, 0])
    y = torch.zeros(4, dtype=torch.long)
    target = SelfKDTarget(TargetSpec(kind="mconf", rho=0.5, b1=16.0), Task.MULTICLASS, 5)
    target.loss(unsure, y, 0.5)  # epoch 1: an unsure model, r ~ 0
    r1 = target.certainty
    assert r1 < 0.05
    target.end_epoch()
    target.loss(confident, y, 0.5)  # the current epoch does not change r until it ends
    assert target.certainty == pytest.approx(r1)
    low = target.trust(confident, 0.5)
    target.end_epoch()
    high = target.trust(confident, 0.5)  # r now comes from the confident epoch
    assert target.certainty > 0.9
    certainty = 1 - Task.MULTICLASS.entropy(confident) / math.log(5)
    assert torch.allclose(high, logistic(target.certainty - 0.5, 16.0) * certainty)
    assert float(high.mean()) > 100 * float(low.mean())


def test_multilabel_targets_are_bernoulli_per_class():
    logits, y = _inputs(Task.MULTILABEL)
    s = torch.sigmoid(logits)
    eps = 0.2
    bce = lambda t: F.binary_cross_entropy_with_logits(logits, t, reduction="none").mean(-1)  # noqa: E731
    make = lambda kind: SelfKDTarget(TargetSpec(kind=kind, epsilon=eps), Task.MULTILABEL, 5)  # noqa: E731
    assert torch.allclose(make("label_smoothing").loss(logits, y, 0.5), bce((1 - eps) * y + eps * 0.5))
    assert torch.allclose(make("boot_soft").loss(logits, y, 0.5), bce((1 - eps) * y + eps * s))
    binary_entropy = -(s * s.log() + (1 - s) * (1 - s).log()).mean(-1)
    assert torch.allclose(Task.MULTILABEL.entropy(logits), binary_entropy, atol=1e-6)
    trust = logistic(0.4, 16.0) * (1 - binary_entropy / math.log(2))
    assert torch.allclose(make("proselflc").loss(logits, y, 0.9), bce((1 - trust[:, None]) * y + trust[:, None] * s),
                          atol=1e-6)
