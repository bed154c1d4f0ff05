"""The method hooks of the distillation and supervised loops: what each learner and teacher actually sees."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from compressor.models import build_classifier
from compressor.recipes import distill_student, train_supervised
from compressor.spec import parse_spec
from compressor.task import Task
from tests.method_cases import one_thread, tiny_teacher, toy_split  # noqa: F401  (fixture)
from tests.synthetic import FAST_TRAINING


class Recorder(nn.Module):
    """Wraps a model and keeps every input batch it sees."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model, self.inputs = model, []

    def forward(self, x):
        self.inputs.append(x.detach().clone())
        return self.model(x)


def _distill(teachers, data=None, peer=None, **distillation):
    distillation = {"training": dict(FAST_TRAINING), "averaging": {"enabled": False}, **distillation}
    spec = parse_spec({"teachers": {"dropout": 0.3}, "distillation": distillation})
    student = Recorder(build_classifier("tiny_cnn", 1, 3, 8, [0.2], [0.3]))
    history, _ = distill_student(student, teachers, data or toy_split(128), spec.distillation, Task.MULTICLASS, "cpu",
                                 torch.Generator().manual_seed(0), peer=peer)
    return student, history


def test_soft_randomization_noises_the_student_input_only():
    teacher = Recorder(tiny_teacher(classes=3))
    student, _ = _distill([teacher], soft_randomization={"sigma": 0.1})
    assert len(student.inputs) == len(teacher.inputs) + 1  # + the one forward that reads the output size
    for seen_by_student, seen_by_teacher in zip(student.inputs[1:], teacher.inputs, strict=True):
        assert float((seen_by_student - seen_by_teacher).std()) == pytest.approx(0.1, rel=0.1)
    clean_student, _ = _distill([Recorder(tiny_teacher(classes=3))])
    assert torch.equal(clean_student.inputs[1], teacher.inputs[0])  # same batches, no noise when sigma = 0


def test_messy_collaboration_in_distillation_and_in_teacher_training():
    _, history = _distill([tiny_teacher(classes=3)], data=toy_split(512), messy={"rate": 0.3})
    assert history.extra["messy_rate"] == pytest.approx([0.3, 0.3], abs=0.06)
    _, history = _distill([tiny_teacher(classes=3)], data=toy_split(64), messy={"rate": 1e-9})
    assert history.extra["messy_rate"] == [0.0, 0.0]  # logged every epoch, also when nothing was changed
    tspec = parse_spec({"teachers": {"training": dict(FAST_TRAINING)}}).teachers.training
    model = build_classifier("tiny_cnn", 1, 3, 8, [0.2], [0.3])
    history = train_supervised(model, toy_split(512), tspec, Task.MULTICLASS, "cpu", torch.Generator().manual_seed(0),
                               messy_rate=0.4)
    assert history.extra["messy_rate"] == pytest.approx([0.4, 0.4], abs=0.06)


def test_baseline_1_needs_no_teacher_and_kd_needs_one():
    _, history = _distill([], alpha=0.0)
    assert history.extra["kd"] == [0.0, 0.0] and "gate_pass_rate" not in history.extra
    with pytest.raises(ValueError, match="at least one teacher"):
        _distill([])


@pytest.mark.parametrize("options", [
    {"weighting": "adaptive"},
    {"weight_draw": "sample"},
    {"teacher_noise": {"fickle": True, "logit_noise": 0.2, "swap": "all", "swap_probability": 0.5}},
    {"gate": {"knowledge": "cmd_s", "eta": 3.0}, "training": {**FAST_TRAINING, "target": {"kind": "mconf"}}},
])
def test_each_weighting_and_noise_option_trains(options):
    teachers = [tiny_teacher(classes=3, dropout=0.3, seed=s) for s in range(2)]
    student, history = _distill(teachers, **options)
    assert len(history.loss) == 2 and all(torch.isfinite(torch.tensor(history.loss)))
    assert 0.0 <= history.extra["gate_pass_rate"][-1] <= 1.0
    for teacher in teachers:  # teachers are never trained and batch norm stays in eval mode
        assert not any(m.training for m in teacher.modules() if isinstance(m, nn.BatchNorm1d))
