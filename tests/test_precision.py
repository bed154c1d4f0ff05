"""Mixed precision: the spec field, the CPU fallback, bf16 training on the CPU (the fused KD op included), the
gradient scaler's path and its checkpoint state, channels-last models. The CUDA path runs in
``benchmarks/gpu_check.sh`` (``benchmarks/gpu_training_check.sh``)."""

from __future__ import annotations

import pytest
import torch

from compressor.checkpoint import ModelInfo, load_classifier, save_classifier
from compressor.metrics import fit_figures
from compressor.models import build_classifier
from compressor.recipes import distill_student, train_supervised
from compressor.spec import parse_spec
from compressor.task import Task
from compressor.training.checkpointing import EpochCheckpoints
from compressor.training.precision import MixedPrecision, resolve_precision
from tests.method_cases import one_thread, tiny_teacher, toy_split  # noqa: F401  (fixture)
from tests.synthetic import errors_of
from tests.test_resume import Interrupted, StopAfter, assert_same_weights

TRAINING = {"epochs": 3, "batch_size": 32, "optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.9},
            "schedule": {"name": "constant"}}


def test_precision_names_resolve_to_fp32_on_the_cpu_unless_bf16_is_asked_for():
    assert resolve_precision("fp32", "cpu") is None
    assert resolve_precision("auto", "cpu") is None
    assert resolve_precision("bf16", "cpu") is torch.bfloat16
    with pytest.raises(ValueError, match="fp16 needs a CUDA device"):
        resolve_precision("fp16", "cpu")
    assert MixedPrecision("auto", "cpu").name == "fp32" and MixedPrecision("auto", "cpu").scaler is None


def test_precision_in_the_spec():
    spec = parse_spec({"teachers": {"training": {"precision": "bf16"}}})
    assert spec.teachers.training.precision == "bf16" and spec.distillation.training.precision == "auto"
    assert any("precision" in m for m in errors_of({"distillation": {"training": {"precision": "half"}}}))
    problems = errors_of({"device": "cpu", "distillation": {"training": {"precision": "fp16"}}})
    assert any("fp16 needs a CUDA device" in m for m in problems)
    parse_spec({"device": "auto", "distillation": {"training": {"precision": "fp16"}}})  # decided at run time


def test_bf16_on_the_cpu_trains_a_teacher_and_a_student_through_the_fused_kd_op():
    spec = parse_spec({"teachers": {"training": {**TRAINING, "precision": "bf16"}}, "distillation": {
        "training": {**TRAINING, "precision": "bf16"}, "averaging": {"warmup_epochs": 1}}})
    data, val = toy_split(150), toy_split(60, seed=5)
    torch.manual_seed(0)
    teacher = build_classifier("tiny_cnn", 1, 3, 8, [0.3], [0.3])
    history = train_supervised(teacher, data, spec.teachers.training, Task.MULTICLASS, "cpu",
                               torch.Generator().manual_seed(1), val=val)
    assert all(p.dtype == torch.float32 for p in teacher.parameters())  # autocast computes, the weights stay fp32
    assert history.extra["val_accuracy"][-1] > 0.6  # three classes: chance is 1/3
    torch.manual_seed(0)
    fp32_teacher = build_classifier("tiny_cnn", 1, 3, 8, [0.3], [0.3])
    train_supervised(fp32_teacher, data, spec.teachers.training.model_copy(update={"precision": "fp32"}),
                     Task.MULTICLASS, "cpu", torch.Generator().manual_seed(1))
    differs = any(not torch.equal(a, b) for a, b in zip(teacher.state_dict().values(),
                                                       fp32_teacher.state_dict().values(), strict=True))
    assert differs  # bf16 really ran (same seed, same batches, other arithmetic)

    torch.manual_seed(1)
    student = build_classifier("tiny_cnn", 1, 3, 8, [0.3], [0.3])
    history, averager = distill_student(student, [teacher.eval(), tiny_teacher(classes=3)], data, spec.distillation,
                                        Task.MULTICLASS, "cpu", torch.Generator().manual_seed(0), val=val)
    assert all(torch.isfinite(torch.tensor(history.extra["kd"])))
    assert history.extra["kd"][-1] > 0 and history.extra["val_accuracy"][-1] > 0.5
    assert fit_figures(averager.model, val, Task.MULTICLASS, "cpu")["accuracy"] > 0.5


def supervised(checkpoints=None, resume=None):
    spec = parse_spec({"teachers": {"training": TRAINING}}).teachers.training
    torch.manual_seed(3)
    model = build_classifier("tiny_cnn", 1, 3, 8, [0.3], [0.3])
    train_supervised(model, toy_split(150), spec, Task.MULTICLASS, "cpu", torch.Generator().manual_seed(1),
                     checkpoints=checkpoints, resume=resume)
    return model


def test_the_gradient_scaler_path_matches_unscaled_training_and_resumes(tmp_path, monkeypatch):
    """fp16's path (scaled backward, unscaled steps, an adapting scale) in float32 arithmetic, so it runs here."""
    plain = supervised()
    original = MixedPrecision.__init__
    made = []

    def with_scaler(self, precision, device, channels_last=None):
        original(self, precision, device, channels_last)
        self.scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10, growth_interval=2)
        made.append(self)

    monkeypatch.setattr(MixedPrecision, "__init__", with_scaler)
    scaled = supervised()
    for a, b in zip(scaled.state_dict().values(), plain.state_dict().values(), strict=True):
        assert torch.allclose(a.float(), b.float(), rtol=1e-5, atol=1e-6)  # scaling by 2^k loses nothing
    with pytest.raises(Interrupted):
        supervised(StopAfter(tmp_path / "s.pt", "k", stop=0))
    state = EpochCheckpoints(tmp_path / "s.pt", "k").load()
    assert state.own["scaler"]["scale"] > 2.0**10  # grew every 2 steps: the state that must survive a resume
    resumed = supervised(EpochCheckpoints(tmp_path / "s.pt", "k"), state)
    assert_same_weights(resumed.state_dict(), scaled.state_dict())
    assert made[-1].scaler.get_scale() == made[0].scaler.get_scale() == 2.0**10 * 2**7  # 15 steps: 7 doublings


def test_channels_last_models_train_and_are_saved_in_the_standard_format(tmp_path):
    amp = MixedPrecision("fp32", "cpu", channels_last=True)
    torch.manual_seed(0)
    model = build_classifier("small_cnn", 1, 3, 8, [0.3], [0.3])
    reference = build_classifier("small_cnn", 1, 3, 8, [0.3], [0.3])
    reference.load_state_dict(model.state_dict())
    amp.prepare([model])
    weights = [p for p in model.parameters() if p.dim() == 4]
    assert weights and all(p.is_contiguous(memory_format=torch.channels_last) for p in weights)
    x = torch.rand(5, 1, 8, 8)
    assert amp.inputs(x).is_contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        assert torch.allclose(model.eval()(amp.inputs(x)), reference.eval()(x), atol=1e-5)
    amp.finish([model])
    assert all(p.is_contiguous() for p in model.parameters())
    info = ModelInfo("small_cnn", 1, 3, 8, [0.3], [0.3], Task.MULTICLASS)
    save_classifier(model, info, tmp_path / "m.safetensors")
    loaded, _ = load_classifier(tmp_path / "m.safetensors")
    assert_same_weights(loaded.state_dict(), model.state_dict())
