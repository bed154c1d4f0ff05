"""Validation in the training loop: figures every epoch, ``select: best_val``, early stopping, resume, the final
student's choice, and the clear error without validation samples."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from compressor.export.decode import PixelFormat

from compressor.data.stores import ArrayStore
from compressor.data.types import Split
from compressor.metrics import fit_figures, fit_sums
from compressor.models import build_classifier
from compressor.pipeline.distill_stage import choose_final
from compressor.recipes import distill_student, train_supervised
from compressor.spec import parse_spec
from compressor.task import Task
from compressor.training.checkpointing import EpochCheckpoints
from compressor.training.hooks import Hook
from compressor.training.validation import NoValidationData
from tests.method_cases import one_thread, tiny_teacher, toy_split  # noqa: F401  (fixture)
from tests.test_resume import Interrupted, StopAfter, assert_same_weights

EPOCHS = 6
TRAINING = {"epochs": EPOCHS, "batch_size": 32, "optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.9},
            "schedule": {"name": "constant"}}


class LearningRateJump(Hook):
    """From epoch ``after`` on, the learning rate is ``lr`` (far too high): the later epochs get worse."""

    def __init__(self, after: int, lr: float):
        self.after, self.lr = after, lr

    def on_step_start(self, loop) -> None:
        if loop.epoch >= self.after:
            for learner in loop.learners:
                for group in learner.optimizer.param_groups:
                    group["lr"] = self.lr


def teacher_spec(**training):
    return parse_spec({"teachers": {"training": {**TRAINING, **training}}}).teachers.training


def train(spec, val, hooks=(), checkpoints=None, resume=None, seed=0):
    torch.manual_seed(seed)
    model = build_classifier("tiny_cnn", 1, 3, 8, [0.3], [0.3])
    history = train_supervised(model, toy_split(150, seed=seed), spec, Task.MULTICLASS, "cpu",
                               torch.Generator().manual_seed(1), val=val, hooks=hooks, checkpoints=checkpoints,
                               resume=resume)
    return model, history


def best_epoch(history) -> int:
    """1-based epoch of the highest val accuracy, ties to the lower loss, then to the earlier epoch."""
    figures = list(zip(history.extra["val_accuracy"], history.extra["val_loss"], strict=True))
    return max(range(len(figures)), key=lambda e: (figures[e][0], -figures[e][1], -e)) + 1


def test_validation_figures_every_epoch_leave_the_training_unchanged():
    val = toy_split(60, seed=5)
    with_val, history = train(teacher_spec(), val)
    without, plain = train(teacher_spec(), None)
    assert_same_weights(with_val.state_dict(), without.state_dict())  # measuring draws nothing, changes nothing
    assert plain.as_dict() == {k: v for k, v in history.as_dict().items() if not k.startswith("val_")}
    assert len(history.extra["val_loss"]) == len(history.extra["val_accuracy"]) == EPOCHS
    last = fit_figures(with_val, val, Task.MULTICLASS, "cpu")
    assert last["loss"] == pytest.approx(history.extra["val_loss"][-1], rel=1e-6)
    assert last["accuracy"] == pytest.approx(history.extra["val_accuracy"][-1])
    assert history.selection == {"select": "last", "epoch": EPOCHS, "val_loss": history.extra["val_loss"][-1],
                                 "val_accuracy": history.extra["val_accuracy"][-1], "epochs_run": EPOCHS,
                                 "stopped_early": False}


def test_best_val_keeps_the_best_validation_epoch_when_late_epochs_get_worse():
    val = toy_split(90, seed=5)
    jump = LearningRateJump(after=3, lr=40.0)
    model, history = train(teacher_spec(select="best_val"), val, hooks=[jump])
    accuracy = history.extra["val_accuracy"]
    assert max(accuracy[:3]) > 0.6 and max(accuracy[3:]) < max(accuracy[:3])  # the jump made late epochs worse
    expected = best_epoch(history)
    assert history.selection["epoch"] == expected <= 3
    kept = fit_figures(model, val, Task.MULTICLASS, "cpu")  # the model holds that epoch's weights
    assert kept["accuracy"] == pytest.approx(accuracy[expected - 1])
    assert kept["loss"] == pytest.approx(history.extra["val_loss"][expected - 1], rel=1e-6)
    last, _ = train(teacher_spec(select="last"), val, hooks=[jump])
    assert fit_figures(last, val, Task.MULTICLASS, "cpu")["accuracy"] == pytest.approx(accuracy[-1])
    assert kept["accuracy"] > accuracy[-1]


@pytest.mark.parametrize("metric", ["val_loss", "val_accuracy"])
def test_early_stopping_ends_training_after_patience_epochs_without_improvement(metric):
    patience = 2
    spec = teacher_spec(epochs=10, early_stopping={"enabled": True, "patience": patience, "metric": metric})
    _, history = train(spec, toy_split(90, seed=5), hooks=[LearningRateJump(after=2, lr=40.0)])
    values = history.extra[metric] if metric == "val_loss" else [-a for a in history.extra[metric]]
    # replay the rule on the recorded figures: stop once the best is patience epochs old
    best, waited, stop = values[0], 0, None
    for epoch, value in enumerate(values[1:], start=2):
        best, waited = (value, 0) if value < best else (best, waited + 1)
        if waited >= patience:
            stop = epoch
            break
    assert stop is not None and len(history.loss) == stop < 10
    assert history.selection["stopped_early"] and history.selection["epochs_run"] == stop


def test_early_stopped_best_val_training_resumes_bit_for_bit(tmp_path):
    spec = teacher_spec(epochs=8, select="best_val", early_stopping={"enabled": True, "patience": 2})
    val = toy_split(60, seed=5)
    hooks = [LearningRateJump(after=2, lr=40.0)]
    reference, reference_history = train(spec, val, hooks)
    assert reference_history.selection["stopped_early"]
    stopped = len(reference_history.loss)
    for stop in (1, stopped):  # mid-way, and after the stop (the remaining epochs only carry the flag on)
        with pytest.raises(Interrupted):
            train(spec, val, hooks, StopAfter(tmp_path / f"t{stop}.pt", "k", stop=stop - 1))
        state = EpochCheckpoints(tmp_path / f"t{stop}.pt", "k").load()
        resumed, history = train(spec, val, hooks, EpochCheckpoints(tmp_path / f"t{stop}.pt", "k"), state)
        assert_same_weights(resumed.state_dict(), reference.state_dict())
        assert history.as_dict() == reference_history.as_dict() and history.selection == reference_history.selection


def test_select_best_val_or_early_stopping_without_validation_samples_is_a_clear_error():
    empty = toy_split(150).subset(np.array([], dtype=np.int64))
    for training in ({"select": "best_val"}, {"early_stopping": {"enabled": True}}):
        with pytest.raises(NoValidationData, match="need validation samples"):
            train(teacher_spec(epochs=1, **training), empty)
    _, history = train(teacher_spec(epochs=1), empty)  # select: last needs none
    assert "val_loss" not in history.extra and history.selection == {}


def test_student_best_val_selects_its_epoch_and_the_peer_is_measured_too():
    raw = {"distillation": {"training": {**TRAINING, "select": "best_val"}, "mutual": {"enabled": True},
                            "averaging": {"warmup_epochs": 1}}}
    spec = parse_spec(raw).distillation
    val = toy_split(90, seed=5)
    torch.manual_seed(7)
    student = build_classifier("tiny_cnn", 1, 3, 8, [0.3], [0.3])
    peer = build_classifier("tiny_cnn", 1, 3, 8, [0.3], [0.3])
    teachers = [tiny_teacher(classes=3, seed=1)]
    history, averager = distill_student(student, teachers, toy_split(150), spec, Task.MULTICLASS, "cpu",
                                        torch.Generator().manual_seed(0), peer=peer, val=val,
                                        hooks=[LearningRateJump(after=3, lr=40.0)])
    assert len(history.extra["peer_val_accuracy"]) == EPOCHS
    expected = best_epoch(history)
    assert history.selection["epoch"] == expected
    kept = fit_figures(student, val, Task.MULTICLASS, "cpu")
    assert kept["accuracy"] == pytest.approx(history.extra["val_accuracy"][expected - 1])
    assert averager is not None


def test_final_student_choice():
    better, worse = {"loss": 0.5, "accuracy": 0.9}, {"loss": 0.4, "accuracy": 0.8}
    assert choose_final({}, averaging=False, select="last") == "student"
    assert choose_final({}, averaging=True, select="last") == "student_averaged"
    assert choose_final({"student": better, "student_averaged": worse}, True, "best_val") == "student"
    assert choose_final({"student": worse, "student_averaged": better}, True, "best_val") == "student_averaged"
    tie = {"loss": 0.5, "accuracy": 0.9}
    assert choose_final({"student": tie, "student_averaged": dict(tie)}, True, "best_val") == "student_averaged"
    assert choose_final({"student": {"loss": 0.4, "accuracy": 0.9}, "student_averaged": tie}, True,
                        "best_val") == "student"


def test_validation_sums_read_a_windowed_store_slice_like_the_tensor():
    """``fit_sums`` over a rank's rows of a 16-bit memory store goes through the split's window, as the tensor does."""

    rng = np.random.default_rng(3)
    pixels = rng.integers(0, 4096, size=(37, 8, 8), dtype=np.uint16)  # 12-bit values in a 16-bit type
    labels = rng.integers(0, 3, size=37)
    fmt = PixelFormat("uint16", (100.0, 3000.0))
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 3))
    tensor = Split(torch.from_numpy(pixels[:, None].astype(np.int32)).to(torch.uint16), labels, pixel_format=fmt)
    store = Split(ArrayStore(pixels, "probe", 1, None, "uint16"), labels, pixel_format=fmt)
    task = Task("multiclass")
    in_memory, streamed = fit_sums(model, tensor, task, "cpu", 5, 30), fit_sums(model, store, task, "cpu", 5, 30)
    x = torch.from_numpy(((pixels[5:30, None].astype(np.float32) - 100.0) / 2900.0).clip(0.0, 1.0))
    with torch.no_grad():
        by_hand = float(torch.nn.functional.cross_entropy(model(x), torch.from_numpy(labels[5:30]), reduction="sum"))
    assert streamed[2] == in_memory[2] == 25
    assert streamed[0] == pytest.approx(in_memory[0], rel=1e-6) and streamed[1] == in_memory[1]
    assert streamed[0] == pytest.approx(by_hand, rel=1e-5)


def test_select_auto_resolves_to_best_val_only_where_asked():
    """``TrainSpec.with_select``: auto becomes best_val for a teacher with validation data, else last; an explicit
    choice is kept."""
    from compressor.spec.training import TrainSpec

    assert TrainSpec().select == "auto"
    assert TrainSpec().with_select(prefer_best_val=True).select == "best_val"
    assert TrainSpec().with_select(prefer_best_val=False).select == "last"
    for explicit in ("last", "best_val"):
        for prefer in (True, False):
            assert TrainSpec(select=explicit).with_select(prefer_best_val=prefer).select == explicit
