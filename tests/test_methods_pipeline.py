"""End-to-end runs of method families through the pipeline on tiny data (fast_spec)."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from compressor.io import read_json
from compressor.pipeline import StageError, run_pipeline
from compressor.pipeline.summary import summary_table
from compressor.spec import parse_spec
from tests.method_cases import one_thread  # noqa: F401  (fixture)
from tests.synthetic import FAST_TRAINING, fast_spec, statuses, write_npz

pytestmark = pytest.mark.slow


def spec_of(**sections):
    """``fast_spec`` without the ONNX export (tested elsewhere): these tests are about the methods."""
    return parse_spec(fast_spec(export={"onnx": False}, **sections))


def rendered(run_dir) -> str:
    out = io.StringIO()
    Console(file=out, width=200).print(summary_table(run_dir))
    return out.getvalue()


def test_baseline_1_trains_no_teacher(tmp_path):
    spec = spec_of(method={"preset": "baseline_1"}, noise={"kind": "symmetric", "rate": 0.4})
    results = run_pipeline(spec, tmp_path / "run")
    assert statuses(results)["teachers"] == "disabled" and statuses(results)["distill"] == "ran"
    assert not (tmp_path / "run" / "teachers").exists()
    metrics = read_json(tmp_path / "run" / "metrics.json")
    assert metrics["teachers"] == [] and set(metrics["test"]) == {"student"} and metrics["method"] == "baseline_1"
    assert read_json(tmp_path / "run" / "student" / "summary.json")["teachers_used"] == 0
    assert "student (final)" in rendered(tmp_path / "run")


def test_groupdistil_reports_group_and_worst_group_accuracy(tmp_path):
    path = write_npz(tmp_path / "groups.npz", groups=True, sizes=(200, 40, 80))
    spec = spec_of(data={"source": "npz", "path": str(path)},
                   distillation={"group_dro": {"enabled": True, "eta_w": 0.05}})
    run_pipeline(spec, tmp_path / "run")
    metrics = read_json(tmp_path / "run" / "metrics.json")
    for name, model in metrics["test"].items():
        assert set(model["group_accuracy"]) == {"0", "1"}, name
        assert model["worst_group_accuracy"] == min(model["group_accuracy"].values())
    weights = metrics["distillation"]["group_weights"]
    assert len(weights) == 2 and sum(weights) == pytest.approx(1.0) and weights != [0.5, 0.5]
    assert "worst group" in rendered(tmp_path / "run")


def test_multilabel_cmd_with_mutual_peer_and_self_kd_targets(tmp_path):
    path = write_npz(tmp_path / "chest.npz", multilabel=4, sizes=(160, 40, 60))
    training = {**FAST_TRAINING, "target": {"kind": "proselflc"}}
    spec = spec_of(
        data={"source": "npz", "path": str(path)},
        teachers={"training": {**FAST_TRAINING, "target": {"kind": "mconf"}}},
        distillation={"training": training, "gate": {"knowledge": "cmd_p", "eta": 1.5, "b2": -4.0},
                      "mutual": {"enabled": True, "peer_arch": "small_cnn"}},
    )
    run_pipeline(spec, tmp_path / "run")
    metrics = read_json(tmp_path / "run" / "metrics.json")
    assert metrics["task"] == "multilabel" and metrics["student"]["peer_arch"] == "small_cnn"
    assert len(metrics["test"]["peer"]["auc_per_class"]) == 4
    gate = metrics["distillation"]
    assert len(gate["gate_passed"]) == 2 and gate["gate_threshold"][0] > gate["gate_threshold"][1]
    assert 0 <= gate["exchange_pass_rate"][-1] <= 1 and "peer_exchange_pass_rate" in gate
    assert (tmp_path / "run" / "student" / "peer.safetensors").exists()
    assert "peer (mutual)" in rendered(tmp_path / "run")
    peer_params = f"{metrics['student']['peer_params']:,}"  # small_cnn: not the student's parameter count
    assert peer_params != f"{metrics['student']['params']:,}"
    report = (tmp_path / "run" / "report.md").read_text()
    (peer_row,) = [line for line in report.splitlines() if "peer (mutual)" in line]
    assert f"| {peer_params} |" in peer_row


def test_single_label_only_methods_fail_before_training_teachers(tmp_path):
    path = write_npz(tmp_path / "chest.npz", multilabel=4, sizes=(80, 20, 20))
    spec = spec_of(data={"source": "npz", "path": str(path)},
                   distillation={"teacher_noise": {"swap": "top2", "swap_probability": 0.5}})
    with pytest.raises(StageError, match="single-label only"):
        run_pipeline(spec, tmp_path / "run")
    assert not (tmp_path / "run" / "teachers" / "teacher_0.safetensors").exists()


def test_noise_in_kd_family_runs_end_to_end(tmp_path):
    spec = spec_of(
        noise={"kind": "symmetric", "rate": 0.4},
        teachers={"dropout": 0.3, "messy": {"rate": 0.2}},
        distillation={"teacher_noise": {"fickle": True, "logit_noise": 0.1, "swap": "all", "swap_probability": 0.3},
                      "soft_randomization": {"sigma": 0.05}, "messy": {"rate": 0.5}},
    )
    run_pipeline(spec, tmp_path / "run")
    teacher = read_json(tmp_path / "run" / "teachers" / "teacher_0.json")
    assert teacher["messy_rate"] == 0.2 and teacher["history"]["messy_rate"][0] == pytest.approx(0.2, abs=0.07)
    metrics = read_json(tmp_path / "run" / "metrics.json")
    assert metrics["distillation"]["messy_rate"][0] == pytest.approx(0.5, abs=0.07)
    assert metrics["test"][metrics["final_model"]]["accuracy"] > 0.2  # above chance (0.1) after two epochs
