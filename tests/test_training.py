"""Training building blocks: schedules, teacher weights, weight averaging, augmentation, distillation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from compressor.data.batches import apply_views, batch_indices, draw_views
from compressor.data.types import Split
from compressor.methods.averaging import WeightAverager
from compressor.methods.weighting import batch_teacher_weights
from compressor.models import build_classifier
from compressor.recipes import distill_student, train_supervised
from compressor.spec import parse_spec
from compressor.spec.training import AugmentSpec, ScheduleSpec
from compressor.task import Task
from compressor.training.optim import lr_factor


def test_lr_schedules():
    multistep = ScheduleSpec(name="multistep", milestones=[25, 40], gamma=0.1)
    assert [lr_factor(e, 50, multistep) for e in (0, 24, 25, 39, 40, 49)] == pytest.approx([1, 1, 0.1, 0.1, 0.01, 0.01])
    cosine = ScheduleSpec(name="cosine")
    assert lr_factor(0, 10, cosine) == 1.0 and lr_factor(5, 10, cosine) == pytest.approx(0.5)
    warm = ScheduleSpec(name="constant", warmup_epochs=3)
    assert [lr_factor(e, 10, warm) for e in range(5)] == pytest.approx([0.25, 0.5, 0.75, 1, 1])


def test_teacher_weights():
    gen = torch.Generator().manual_seed(0)
    spec = lambda **d: parse_spec({"distillation": d}).distillation  # noqa: E731
    weights = lambda s, k=3: batch_teacher_weights(s, torch.zeros(k, 1, 2), torch.zeros(1), Task.MULTICLASS, gen)  # noqa: E731
    assert torch.allclose(weights(spec(weighting="equal"), 4), torch.full((4,), 0.25))
    exponential, raw_scale = spec(), spec(weight_scale="raw")
    draws = torch.stack([weights(exponential) for _ in range(4000)])
    assert torch.allclose(draws.sum(1), torch.ones(4000))
    assert draws.std(0).min() > 0.2  # random per call
    assert torch.allclose(draws.mean(0), torch.full((3,), 1 / 3), atol=0.02)  # Exp(1) normalised: Dirichlet(1)
    raw = torch.stack([weights(raw_scale) for _ in range(4000)])
    assert (raw > 0).all() and raw.sum(1).std() > 0.5  # not normalised: the sum is Gamma(3, 1)
    assert torch.allclose(raw.mean(0), torch.ones(3), atol=0.06) and torch.allclose(raw.std(0), torch.ones(3), atol=0.1)
    assert weights(spec(weighting="single", single_teacher=2)).tolist() == [0, 0, 1]


def test_running_mean_equals_mean_of_snapshots():
    model = build_classifier("small_cnn", 1, 3, 8, [0.5], [0.5])
    averager = WeightAverager(model)
    snapshots = []
    for _step in range(5):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p))
        snapshots.append({k: v.clone() for k, v in model.state_dict().items()})
        averager.update(model)
    averaged = averager.model.state_dict()
    for key, value in averaged.items():
        stack = torch.stack([s[key] for s in snapshots])
        expected = stack.float().mean(0) if value.dtype.is_floating_point else stack[-1]
        assert torch.allclose(value.float(), expected.float(), atol=1e-5), key


def test_ema_mode():
    model = torch.nn.Linear(3, 2)
    averager = WeightAverager(model, mode="ema", decay=0.9)
    start = model.weight.detach().clone()
    averager.update(model)
    with torch.no_grad():
        model.weight.add_(1.0)
    averager.update(model)
    assert torch.allclose(averager.model.weight, start + 0.1)


def test_augment_crop_and_flip_keep_shape_and_content():
    x = torch.arange(2 * 1 * 4 * 4, dtype=torch.float32).view(2, 1, 4, 4)
    gen = torch.Generator().manual_seed(0)
    flipped = apply_views(x, 0, draw_views(2, AugmentSpec(hflip=True), gen))
    for i in range(2):
        assert torch.equal(flipped[i], x[i]) or torch.equal(flipped[i], x[i].flip(-1))
    cropped = apply_views(x, 1, draw_views(2, AugmentSpec(crop_padding=1), gen))
    assert cropped.shape == x.shape
    assert set(cropped.unique().tolist()) <= set(x.unique().tolist()) | {0.0}


def test_batches_cover_everything_once():
    seen = torch.cat(list(batch_indices(103, 10, torch.Generator().manual_seed(0))))
    assert sorted(seen.tolist()) == list(range(103))


def _toy_split(n=256, classes=3, seed=0) -> Split:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, n)
    images = rng.integers(0, 40, (n, 1, 8, 8))
    for i, y in enumerate(labels):
        images[i, 0, 2 * y : 2 * y + 2, :] += 200
    return Split(torch.from_numpy(images.clip(0, 255).astype(np.uint8)), labels.astype(np.int64))


def test_supervised_training_learns():
    data = _toy_split()
    spec = parse_spec({"teachers": {"training": {"epochs": 4, "batch_size": 32, "schedule": {"name": "constant"},
                                                 "optimizer": {"lr": 0.05}}}}).teachers.training
    model = build_classifier("tiny_cnn", 1, 3, 8, [0.2], [0.3])
    history = train_supervised(model, data, spec, Task.MULTICLASS, "cpu", torch.Generator().manual_seed(0))
    assert len(history.loss) == 4 and history.loss[-1] < history.loss[0]
    assert history.accuracy[-1] > 0.9


def test_distillation_matches_teacher_and_averages():
    data = _toy_split()
    teacher = build_classifier("small_cnn", 1, 3, 8, [0.2], [0.3])
    tspec = parse_spec({"teachers": {"training": {"epochs": 3, "batch_size": 32, "schedule": {"name": "constant"},
                                                  "optimizer": {"lr": 0.05}}}}).teachers.training
    train_supervised(teacher, data, tspec, Task.MULTICLASS, "cpu", torch.Generator().manual_seed(0))
    dspec = parse_spec({"distillation": {"alpha": 1.0, "temperature": 2.0, "weighting": "equal",
                                         "training": {"epochs": 4, "batch_size": 32, "schedule": {"name": "constant"},
                                                      "optimizer": {"lr": 0.05}},
                                         "averaging": {"warmup_epochs": 1}}}).distillation
    student = build_classifier("tiny_cnn", 1, 3, 8, [0.2], [0.3])
    history, averager = distill_student(student, [teacher, teacher], data, dspec, Task.MULTICLASS, "cpu",
                                        torch.Generator().manual_seed(1))
    assert history.extra["kd"][-1] < history.extra["kd"][0]
    assert history.extra["gate_pass_rate"] == [1.0] * 4  # no gate: every teacher output passes
    assert averager is not None and averager.count == 3  # epochs 1, 2, 3 after one warm-up epoch
    assert not averager.model.training  # batch-norm statistics recomputed, evaluation mode kept
    x = data.images[:64].float() / 255
    with torch.no_grad():
        agree = (student.eval()(x).argmax(1) == teacher(x).argmax(1)).float().mean()
        agree_avg = (averager.model(x).argmax(1) == teacher(x).argmax(1)).float().mean()
    assert agree > 0.9 and agree_avg > 0.9
    assert not math.isnan(history.loss[-1])
