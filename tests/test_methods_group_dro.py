"""GroupDistil: exponentiated-gradient group weights, the robust loss, and per-group / worst-group accuracy."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from compressor.methods.group_dro import GroupWeights, group_mean_losses
from compressor.metrics import group_accuracy
from compressor.models import build_classifier
from compressor.recipes import distill_student, train_supervised
from compressor.spec import parse_spec
from compressor.task import Task
from tests.method_cases import one_thread, toy_split  # noqa: F401  (fixture)


def test_group_weights_follow_algorithm_1():
    weights = GroupWeights(3, eta_w=0.5)
    rows = torch.tensor([1.0, 3.0, 2.0, 2.0, 0.5], requires_grad=True)
    groups = torch.tensor([0, 0, 1, 1, 1])
    losses, counts = group_mean_losses(rows, groups, 3)
    assert losses.tolist() == pytest.approx([2.0, 1.5, 0.0]) and counts.tolist() == [2, 3, 0]
    loss = weights.reduce(rows, groups)
    w = torch.tensor([1 / 3, 1 / 3, 1 / 3]) * torch.exp(0.5 * torch.tensor([2.0, 1.5, 0.0]))
    w = w / w.sum()
    assert torch.allclose(weights.weights, w)
    assert float(loss.detach()) == pytest.approx(float((w * torch.tensor([2.0, 1.5, 0.0])).sum()))
    loss.backward()  # d loss / d row = w_g / n_g
    assert torch.allclose(rows.grad, torch.tensor([w[0] / 2, w[0] / 2, w[1] / 3, w[1] / 3, w[1] / 3]))


def test_group_weights_move_toward_the_worst_group():
    weights = GroupWeights(2, eta_w=0.05)
    for _ in range(200):
        weights.update(torch.tensor([0.2, 1.0]))  # group 1 is persistently worse
    assert weights.weights[1] > 0.99 and float(weights.weights.sum()) == pytest.approx(1.0)


def test_group_accuracy_and_worst_group():
    logits = np.array([[2.0, 0], [0, 2.0], [2.0, 0], [2.0, 0], [0, 2.0]])
    labels = np.array([0, 1, 1, 0, 0])
    groups = np.array([0, 0, 1, 1, 1])
    out = group_accuracy(logits, labels, groups, Task.MULTICLASS)
    assert out["group_accuracy"] == {"0": 1.0, "1": pytest.approx(1 / 3)}
    assert out["worst_group_accuracy"] == pytest.approx(1 / 3) and out["group_samples"] == {"0": 2, "1": 3}
    multilabel = group_accuracy(np.array([[3.0, -3.0], [3.0, 3.0]]), np.array([[1, 0], [1, 0]]), np.array([0, 1]),
                                Task.MULTILABEL)
    assert multilabel["group_accuracy"] == {"0": 1.0, "1": 0.0}
    with pytest.raises(ValueError, match="3 group labels for 5 samples"):
        group_accuracy(logits, labels, groups[:3], Task.MULTICLASS)


def test_group_distil_steps_the_weights_toward_each_batch_worst_group(monkeypatch):
    data = toy_split(320, minority=0.1, seed=3)  # group 1: 10% of the samples, inverted contrast
    torch.manual_seed(0)
    teacher = build_classifier("small_cnn", 1, 3, 8, [0.3], [0.3])
    tspec = parse_spec({"teachers": {"training": {"epochs": 3, "batch_size": 32, "schedule": {"name": "constant"},
                                                  "optimizer": {"lr": 0.05}}}}).teachers.training
    train_supervised(teacher, data, tspec, Task.MULTICLASS, "cpu", torch.Generator().manual_seed(0))
    spec = parse_spec({"distillation": {"group_dro": {"enabled": True, "eta_w": 0.05}, "weighting": "equal",
                                        "training": {"epochs": 2, "batch_size": 32, "schedule": {"name": "constant"},
                                                     "optimizer": {"lr": 0.05}},
                                        "averaging": {"enabled": False}}, "data": {"source": "npz", "path": "x.npz"}})
    steps = []
    real_update = GroupWeights.update

    def spy(self, losses):
        before = self.weights.clone()
        real_update(self, losses)
        steps.append((before, losses.detach().clone(), self.weights.clone()))

    monkeypatch.setattr(GroupWeights, "update", spy)
    student = build_classifier("tiny_cnn", 1, 3, 8, [0.3], [0.3])
    history, _ = distill_student(student, [teacher], data, spec.distillation, Task.MULTICLASS, "cpu",
                                 torch.Generator().manual_seed(1))
    assert len(steps) == 2 * 10  # one weight step per batch
    cumulative = torch.zeros(2)
    for before, losses, after in steps:
        assert float(after.sum()) == pytest.approx(1.0)
        worse = int(losses.argmax())
        assert after[worse] / before[worse] >= after[1 - worse] / before[1 - worse]  # toward the batch's worst group
        cumulative += losses
    # w = softmax(eta_w * cumulative group losses): the group that did worse overall holds the larger weight
    expected = torch.softmax(0.05 * cumulative, 0)
    final = torch.tensor([history.extra["group_weight_0"][-1], history.extra["group_weight_1"][-1]])
    assert torch.allclose(final, expected, atol=1e-5) and int(final.argmax()) == int(cumulative.argmax())
    assert abs(float(final[0]) - 0.5) > 0.01  # the weights did move
    with pytest.raises(ValueError, match="group labels"):
        distill_student(student, [teacher], toy_split(64), spec.distillation, Task.MULTICLASS, "cpu",
                        torch.Generator().manual_seed(1))
