"""``--resume``: epoch checkpoints restore every state of the training loops, so an interrupted run finishes with the
same weights, bit for bit on CPU, as a run that was never interrupted; checkpoints of other work are ignored."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
import torch
import yaml
from safetensors.torch import load_file

from compressor.io import atomic_path
from compressor.models import build_classifier
from compressor.recipes import distill_student, train_supervised
from compressor.spec import parse_spec
from compressor.task import Task
from compressor.training.checkpointing import EpochCheckpoints
from tests.method_cases import one_thread, tiny_teacher, toy_split  # noqa: F401  (fixture)
from tests.synthetic import fast_spec


class Interrupted(Exception):
    """Stands for a process killed right after an epoch checkpoint was written."""


class StopAfter(EpochCheckpoints):
    """Checkpoints that stop the loop once the checkpoint of epoch ``stop`` is on disk."""

    def __init__(self, path, key, stop: int):
        super().__init__(path, key)
        self.stop = stop

    def save(self, epoch, shared=None, own=None):
        super().save(epoch, shared, own)
        if epoch == self.stop:
            raise Interrupted


def assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


TRAINING = {"epochs": 3, "batch_size": 32, "optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.9},
            "schedule": {"name": "cosine"}}


def test_supervised_loop_resumes_bit_for_bit(tmp_path):
    """Model, optimiser, schedule, batch generator, dropout RNG, Mconf statistics and messy draws all continue."""
    spec = parse_spec({"teachers": {"training": {
        **TRAINING, "augment": {"crop_padding": 1, "hflip": True}, "target": {"kind": "mconf"}}}}).teachers.training
    data = toy_split(150)

    def run(checkpoints=None, resume=None):
        torch.manual_seed(3)
        model = build_classifier("tiny_cnn", 1, 3, 8, [0.3], [0.3], dropout=0.3)
        history = train_supervised(model, data, spec, Task.MULTICLASS, "cpu", torch.Generator().manual_seed(1),
                                   messy_rate=0.2, checkpoints=checkpoints, resume=resume)
        return model.state_dict(), history

    reference, reference_history = run()
    with pytest.raises(Interrupted):
        run(StopAfter(tmp_path / "t.pt", "k", stop=0))
    state = EpochCheckpoints(tmp_path / "t.pt", "k").load()
    assert state is not None and state.epoch == 0
    resumed, history = run(EpochCheckpoints(tmp_path / "t.pt", "k"), state)
    assert_same_weights(resumed, reference)
    assert history.as_dict() == reference_history.as_dict()


def test_distillation_resumes_bit_for_bit_with_every_method_state(tmp_path):
    """Student, mutual peer, averager, group weights, self-KD target, fickle-teacher and student dropout RNG."""
    raw = {"teachers": {"dropout": 0.3}, "data": {"source": "npz", "path": "x.npz"}, "distillation": {
        "training": {**TRAINING, "target": {"kind": "mconf"}}, "weighting": "exponential", "weight_draw": "sample",
        "teacher_noise": {"fickle": True, "logit_noise": 0.1}, "soft_randomization": {"sigma": 0.1},
        "messy": {"rate": 0.1}, "group_dro": {"enabled": True, "eta_w": 0.05}, "mutual": {"enabled": True},
        "gate": {"knowledge": "cmd_p", "b2": -2.0}, "averaging": {"warmup_epochs": 1, "mode": "ema", "decay": 0.5}}}
    spec = parse_spec(raw).distillation
    data = toy_split(150, minority=0.3)
    teachers = [tiny_teacher(classes=3, dropout=0.3, seed=1), tiny_teacher(classes=3, dropout=0.3, seed=2)]

    def run(checkpoints=None, resume=None):
        torch.manual_seed(7)
        student = build_classifier("tiny_cnn", 1, 3, 8, [0.3], [0.3], dropout=0.2)
        peer = build_classifier("tiny_cnn", 1, 3, 8, [0.3], [0.3], dropout=0.2)
        history, averager = distill_student(student, teachers, data, spec, Task.MULTICLASS, "cpu",
                                            torch.Generator().manual_seed(0), peer=peer, checkpoints=checkpoints,
                                            resume=resume)
        return {"student": student.state_dict(), "peer": peer.state_dict(), "averaged": averager.model.state_dict(),
                "history": history.as_dict(), "count": averager.count}

    reference = run()
    for stop in (0, 1):  # before the averaging starts, and after
        with pytest.raises(Interrupted):
            run(StopAfter(tmp_path / f"d{stop}.pt", "k", stop=stop))
        state = EpochCheckpoints(tmp_path / f"d{stop}.pt", "k").load()
        resumed = run(EpochCheckpoints(tmp_path / f"d{stop}.pt", "k"), state)
        for part in ("student", "peer", "averaged"):
            assert_same_weights(resumed[part], reference[part])
        assert resumed["history"] == reference["history"] and resumed["count"] == reference["count"]
    assert "group_weight_0" in reference["history"] and "peer_loss" in reference["history"]


def test_checkpoints_of_other_work_or_without_resume_are_ignored(tmp_path):
    path = tmp_path / "c.pt"
    EpochCheckpoints(path, "stage-a").save(2, shared={"x": torch.ones(2)}, own={"rng": torch.get_rng_state()})
    state = EpochCheckpoints(path, "stage-a").load()
    assert state.epoch == 2 and torch.equal(state.shared["x"], torch.ones(2)) and "rng" in state.own
    assert EpochCheckpoints(path, "stage-b").load() is None  # another spec
    assert EpochCheckpoints(path, "stage-a", resume=False).load() is None  # no --resume: start over
    with pytest.raises(RuntimeError):  # killed while writing the next epoch's checkpoint...
        with atomic_path(path) as tmp:
            tmp.write_bytes(b"half a checkpo")
            raise RuntimeError("killed")
    assert EpochCheckpoints(path, "stage-a").load().epoch == 2  # ...the previous one is intact
    path.write_bytes(b"garbage")  # unreadable: not resumable, not an error
    assert EpochCheckpoints(path, "stage-a").load() is None


@pytest.mark.slow
def test_run_killed_during_teacher_training_resumes_to_the_same_student(tmp_path):
    """SIGKILL from outside while a teacher trains; ``--resume`` finishes with the uninterrupted run's student."""
    train = {"epochs": 6, "batch_size": 32, "optimizer": {"name": "sgd", "lr": 0.05}, "schedule": {"name": "cosine"}}
    raw = fast_spec(export={"onnx": False}, teachers={"training": train, "dropout": 0.2},
                    student={"arch": "tiny_cnn", "dropout": 0.1},
                    distillation={"training": {**train, "epochs": 3}, "averaging": {"warmup_epochs": 1}})
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(raw))
    env = {**os.environ, "COMPRESSOR_QUIET": "1"}
    command = [sys.executable, "-m", "compressor", "run", str(tmp_path / "spec.yaml")]
    subprocess.run([*command, "--out", str(tmp_path / "whole")], check=True, env=env, capture_output=True)

    run_dir = tmp_path / "killed"
    proc = subprocess.Popen([*command, "--out", str(run_dir)], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    checkpoint = run_dir / ".compressor" / "checkpoints" / "teachers" / "round.pt"
    deadline = time.monotonic() + 300
    while not checkpoint.exists():  # teacher training is under way once its first epoch checkpoint exists
        assert proc.poll() is None and time.monotonic() < deadline, "the run ended before a teacher checkpoint"
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert checkpoint.exists() and not (run_dir / "teachers" / "teacher_1.json").exists()  # killed mid-stage
    assert not (run_dir / "student.safetensors").exists()

    resumed = subprocess.run([*command, "--out", str(run_dir), "--resume"], env=env, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming after epoch" in resumed.stderr  # it continued from the checkpoint, not from scratch
    assert not checkpoint.parent.exists()  # removed once the stage finished
    whole = tmp_path / "whole"
    assert_same_weights(load_file(run_dir / "student.safetensors"), load_file(whole / "student.safetensors"))
    for i in (0, 1):
        assert_same_weights(load_file(run_dir / "teachers" / f"teacher_{i}.safetensors"),
                            load_file(whole / "teachers" / f"teacher_{i}.safetensors"))
