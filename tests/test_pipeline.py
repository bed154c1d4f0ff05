"""End-to-end runs of the pipeline on small data: artifacts, ONNX parity, re-runs that skip finished stages."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import onnxruntime as ort
import pytest
import yaml

from compressor.io import read_json
from compressor.pipeline import StageError, run_pipeline
from compressor.run_layout import RunLayout
from compressor.spec import load_spec, parse_spec
from tests.synthetic import fast_spec, statuses, write_npz

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("run")
    spec = parse_spec(fast_spec(noise={"kind": "symmetric", "rate": 0.4}))
    results = run_pipeline(spec, run_dir)
    return spec, run_dir, results


def test_run_directory_holds_every_artifact(digits_run):
    spec, run_dir, results = digits_run
    assert statuses(results) == {n: "ran" for n in ("data", "teachers", "audit", "distill", "metrics", "export",
                                                    "report")} | {"certify": "disabled"}
    for name in ("spec.yaml", "metrics.json", "student.onnx", "student.safetensors", "export.json",
                 "data/labels.npz", "data/label_issues.csv", "data/label_audit.json", "teachers/teacher_0.safetensors",
                 "teachers/teacher_1.safetensors"):
        assert (run_dir / name).exists(), name
    assert parse_spec(yaml.safe_load((run_dir / "spec.yaml").read_text())) == spec  # resolved spec
    assert not list(run_dir.rglob("*.tmp"))


def test_metrics_cover_teachers_student_and_averaged(digits_run):
    _, run_dir, _ = digits_run
    metrics = read_json(run_dir / "metrics.json")
    assert set(metrics["test"]) == {"teacher_0", "teacher_1", "student", "student_averaged"}
    for m in metrics["test"].values():
        assert {"accuracy", "precision", "recall", "f1", "auc", "auc_per_class"} <= set(m)
        assert len(m["auc_per_class"]) == 10 and m["accuracy"] > 0.2  # well above chance (0.1) after 2 epochs
    assert 0.33 < metrics["noise"]["train"]["noise_rate"] < 0.47
    assert metrics["noise"]["test"]["noise_rate"] == 0.0
    assert all(0.25 < t["subset_noise_rate"] < 0.55 for t in metrics["teachers"])
    labels = np.load(run_dir / "data" / "labels.npz")
    assert labels["train_noise_mask"].mean() == pytest.approx(metrics["noise"]["train"]["noise_rate"])


def test_onnxruntime_reproduces_reported_accuracy(digits_run):
    spec, run_dir, _ = digits_run
    from compressor.data import prepare_data

    test = prepare_data(spec).test
    session = ort.InferenceSession(str(run_dir / "student.onnx"), providers=["CPUExecutionProvider"])
    images = test.images.numpy().astype(np.float32) / 255.0
    logits = session.run(None, {session.get_inputs()[0].name: images})[0]
    metrics = read_json(run_dir / "metrics.json")
    reported = metrics["test"][metrics["final_model"]]["accuracy"]
    assert float((logits.argmax(1) == test.labels).mean()) == pytest.approx(reported, abs=1.5 / len(test))
    parity = read_json(run_dir / "export.json")["parity"]
    assert parity["passed"] and parity["max_abs_diff"] < 1e-3 and parity["agreement"] >= 0.99
    # the batch axis is dynamic
    assert session.run(None, {session.get_inputs()[0].name: images[:1]})[0].shape == (1, 10)


def test_rerun_skips_finished_stages(digits_run):
    spec, run_dir, _ = digits_run
    mtime = (run_dir / "teachers" / "teacher_0.safetensors").stat().st_mtime_ns
    results = run_pipeline(spec, run_dir)
    assert set(statuses(results).values()) == {"skipped", "disabled"}  # certify is off in fast_spec
    assert (run_dir / "teachers" / "teacher_0.safetensors").stat().st_mtime_ns == mtime


def test_changing_student_reruns_distillation_onward_only(digits_run, tmp_path):
    spec, run_dir, _ = digits_run
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    changed = spec.model_copy(update={"student": spec.student.model_copy(update={"arch": "small_cnn"})})
    results = run_pipeline(changed, copy)
    assert statuses(results) == {"data": "skipped", "teachers": "skipped", "audit": "skipped", "distill": "ran",
                                 "metrics": "ran", "certify": "disabled", "export": "ran", "report": "ran"}
    assert read_json(copy / "metrics.json")["student"]["arch"] == "small_cnn"


def test_interrupted_stage_is_not_trusted(digits_run, tmp_path):
    spec, run_dir, _ = digits_run
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    (copy / "student.onnx").unlink()  # an output went missing: the stage must run again
    assert statuses(run_pipeline(spec, copy))["export"] == "ran"
    RunLayout(copy).stage_marker("distill").unlink()  # no marker: as if killed mid-stage
    assert statuses(run_pipeline(spec, copy))["distill"] == "ran"


def test_same_seed_same_run(tmp_path):
    raw = fast_spec(noise={"kind": "pairflip", "rate": 0.3}, subsets={"count": 2, "overlap": 0.2})
    run_pipeline(parse_spec(raw), tmp_path / "a")
    run_pipeline(parse_spec(raw), tmp_path / "b")
    a, b = read_json(tmp_path / "a" / "metrics.json"), read_json(tmp_path / "b" / "metrics.json")
    assert a["test"] == b["test"]


def test_npz_multilabel_run(tmp_path):
    path = write_npz(tmp_path / "chest.npz", multilabel=4, sizes=(160, 40, 60))
    raw = fast_spec(data={"source": "npz", "path": str(path)})
    run_pipeline(parse_spec(raw), tmp_path / "run")
    metrics = read_json(tmp_path / "run" / "metrics.json")
    assert metrics["task"] == "multilabel"
    final = metrics["test"][metrics["final_model"]]
    assert len(final["auc_per_class"]) == 4 and "label_accuracy" in final
    assert read_json(tmp_path / "run" / "export.json")["parity"]["passed"]


def test_failed_parity_fails_the_stage(tmp_path, monkeypatch):
    import compressor.export.parity as parity

    real = parity.onnx_logits
    monkeypatch.setattr(parity, "onnx_logits", lambda *a, **k: real(*a, **k) + 0.5)
    with pytest.raises(StageError, match="ONNX parity check failed"):
        run_pipeline(parse_spec(fast_spec()), tmp_path / "run")
    assert not (tmp_path / "run" / "student.onnx").exists()
    assert not RunLayout(tmp_path / "run").stage_marker("export").exists()


def test_cli_run_prints_summary_and_reports_data_errors(tmp_path):
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(yaml.safe_dump(fast_spec(data={"source": "npz", "path": str(tmp_path / "missing.npz")})))
    proc = subprocess.run([sys.executable, "-m", "compressor", "run", str(spec_file), "--out", str(tmp_path / "r")],
                          capture_output=True, text=True, env={**__import__("os").environ, "COMPRESSOR_QUIET": "1"})
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and "missing.npz: data file not found" in proc.stderr

    spec_file.write_text(yaml.safe_dump(fast_spec()))
    proc = subprocess.run([sys.executable, "-m", "compressor", "run", str(spec_file), "--out", str(tmp_path / "r"),
                           "--set", "distillation.training.epochs=1"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "student_averaged (final)" in proc.stdout and "teacher_1" in proc.stdout
    assert load_spec(tmp_path / "r" / "spec.yaml").distillation.training.epochs == 1
    assert json.loads((tmp_path / "r" / "metrics.json").read_text())["final_model"] == "student_averaged"


def test_stage_error_keeps_its_exit_code_through_pickle():
    """Rank 0 sends a stage's error to the other ranks pickled: a gate failure must still exit 3 there."""
    import pickle

    from compressor.pipeline.context import InputFileError

    for error in (StageError("gate failed", exit_code=3), StageError("bad data"), InputFileError("bad model file")):
        clone = pickle.loads(pickle.dumps(error))
        assert (type(clone), str(clone), clone.exit_code) == (type(error), str(error), error.exit_code)
