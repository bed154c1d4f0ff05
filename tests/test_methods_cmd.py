"""CMD: the gate threshold schedule chi, gate statistics through the fused op, and mutual distillation."""

from __future__ import annotations

import math

import pytest
import torch

from compressor import ops, reference
from compressor.methods.cmd import gate_threshold, logistic, peer_knowledge, training_progress
from compressor.models import build_classifier
from compressor.recipes import distill_student
from compressor.spec import parse_spec
from compressor.spec.methods import GateSpec
from compressor.task import Task
from tests.kd_cases import comparable_rows
from tests.method_cases import one_thread, toy_split  # noqa: F401  (fixture)


def test_chi_schedule_matches_eq_12():
    h_u = math.log(10)
    static = GateSpec(knowledge="cmd_s", eta=2.0)
    assert [gate_threshold(static, t, 10, Task.MULTICLASS) for t in (0.1, 0.5, 1.0)] == pytest.approx([h_u / 2] * 3)
    falling = GateSpec(knowledge="cmd_p", eta=2.0, b2=-6.0)
    rising = GateSpec(knowledge="cmd_p", eta=2.0, b2=6.0)
    down = [gate_threshold(falling, t, 10, Task.MULTICLASS) for t in (0.1, 0.5, 1.0)]
    up = [gate_threshold(rising, t, 10, Task.MULTICLASS) for t in (0.1, 0.5, 1.0)]
    assert down[0] > down[1] > down[2] and up[0] < up[1] < up[2]
    assert down[1] == pytest.approx(h_u / 2) == up[1]  # h(0, b) = 1/2 whatever b
    assert down[2] == pytest.approx(h_u / 2 * 2 / (1 + math.exp(6 * 0.5)))  # H(u)/eta * 2 h(0.5, -6)
    assert gate_threshold(GateSpec(knowledge="all"), 0.3, 10, Task.MULTICLASS) == math.inf
    assert gate_threshold(GateSpec(knowledge="zero"), 0.3, 10, Task.MULTICLASS) == 0.0
    assert gate_threshold(GateSpec(knowledge="cmd_s", eta=1.0), 0.3, 4, Task.MULTILABEL) == pytest.approx(math.log(2))
    assert Task.MULTICLASS.uniform_entropy(10) == pytest.approx(h_u)
    assert logistic(0.0, 5.0) == 0.5 and logistic(-1e6, 1.0) == 0.0
    assert training_progress(0, 4, 0, 40, "epoch") == 0.25 and training_progress(3, 4, 9, 40, "step") == 0.25


def test_gate_statistics_change_with_chi():
    torch.manual_seed(0)
    teachers = torch.randn(3, 256, 10) * torch.linspace(0.1, 4.0, 256)[None, :, None]  # confident and unsure rows
    student = torch.randn(256, 10, requires_grad=True)
    w = torch.full((3,), 1 / 3)
    rates, losses = [], []
    for eta in (1.0, 1.5, 2.0, 4.0, 8.0):
        chi = gate_threshold(GateSpec(knowledge="cmd_s", eta=eta), 0.5, 10, Task.MULTICLASS)
        loss, keep, entropy = ops.multi_teacher_kd(student, teachers, w, temperature=2.0, gate_threshold=chi,
                                                   renormalize=True)
        assert torch.equal(keep, entropy < chi)
        loss_ref, keep_ref, entropy_ref = reference.multi_teacher_kd(student, teachers, w, temperature=2.0,
                                                                     gate_threshold=chi, renormalize=True)
        torch.testing.assert_close(entropy, entropy_ref, atol=2e-5, rtol=2e-4)
        rows = comparable_rows(keep, keep_ref, entropy, entropy_ref, chi, torch.float32)
        torch.testing.assert_close(loss[rows], loss_ref[rows], atol=2e-5, rtol=2e-4)
        rates.append(float(keep.float().mean()))
        losses.append(float(loss.detach().sum()))
    assert rates[0] > 0.99 and rates[-1] < rates[2] < rates[1] < rates[0]  # a stricter gate passes less
    assert losses[-1] < losses[0]
    _, keep, _ = ops.multi_teacher_kd(student, teachers, w, temperature=2.0, gate_threshold=0.0)
    assert not keep.any()  # zero knowledge


def test_peer_knowledge_is_gated_and_detached():
    a = torch.randn(4, 5, requires_grad=True)
    b = torch.tensor([[9.0, 0, 0, 0, 0], [0.0, 0, 0, 0, 0], [0, 8.0, 0, 0, 0], [0.0, 0, 0, 0, 0.1]],
                     requires_grad=True)  # rows 0, 2 confident
    loss, keep = peer_knowledge(a, b, chi=0.5, temperature=1.0, task=Task.MULTICLASS)
    assert keep.tolist() == [True, False, True, False]
    assert torch.all(loss[~keep] == 0) and torch.all(loss[keep] > 0)
    loss.sum().backward()
    assert b.grad is None and torch.all(a.grad[~keep] == 0) and a.grad[keep].abs().sum() > 0
    expected = torch.nn.functional.kl_div(torch.log_softmax(a, -1), torch.log_softmax(b, -1), log_target=True,
                                          reduction="none").sum(-1)
    assert torch.allclose(loss[keep], expected[keep].detach(), atol=1e-5)


def _spec(**distillation):
    base = {"alpha": 0.0, "training": {"epochs": 3, "batch_size": 32, "schedule": {"name": "constant"},
                                       "optimizer": {"lr": 0.05}}, "averaging": {"enabled": False}}
    return parse_spec({"distillation": {**base, **distillation}}).distillation


def test_mutual_distillation_trains_both_peers_and_logs_the_exchange():
    data = toy_split(192)
    student, peer = (build_classifier("tiny_cnn", 1, 3, 8, [0.2], [0.3]) for _ in range(2))
    start = [p.detach().clone() for p in peer.parameters()]
    spec = _spec(mutual={"enabled": True}, gate={"knowledge": "cmd_p", "eta": 2.0, "b2": -4.0})
    history, _ = distill_student(student, [], data, spec, Task.MULTICLASS, "cpu", torch.Generator().manual_seed(0),
                                 peer=peer)
    extra = history.extra
    assert "kd" in extra and "gate_pass_rate" not in extra  # no teachers (alpha = 0): only the peers' exchange
    assert len(extra["exchange_pass_rate"]) == 3 and len(extra["peer_exchange_pass_rate"]) == 3
    assert 0 < extra["exchange_pass_rate"][-1] <= 1 and extra["gate_threshold"][0] > extra["gate_threshold"][-1]
    assert extra["peer_accuracy"][-1] > 0.8 and history.accuracy[-1] > 0.8
    assert any(not torch.equal(a, b) for a, b in zip(start, peer.parameters(), strict=True))
    # zero knowledge: nothing crosses, whatever the peers predict
    fresh = lambda: build_classifier("tiny_cnn", 1, 3, 8, [0.2], [0.3])  # noqa: E731
    zero, _ = distill_student(fresh(), [], data, _spec(mutual={"enabled": True}, gate={"knowledge": "zero"}),
                              Task.MULTICLASS, "cpu", torch.Generator().manual_seed(0), peer=fresh())
    assert zero.extra["exchange_passed"] == [0.0, 0.0, 0.0]
