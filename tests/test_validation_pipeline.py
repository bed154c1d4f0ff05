"""Validation in a whole run: only the reporting stages read the test split, every decision is taken on the
validation split (kept epochs, early stopping, the final student, ONNX parity, the int8 gate), metrics.json and the
report show the validation curves, and experiment tracking logs to TensorBoard (MLflow: its missing-extra error)."""

from __future__ import annotations

import pytest
import yaml
from click.testing import CliRunner
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from compressor import tracking
from compressor.cli import main
from compressor.io import read_json
from compressor.pipeline import StageError, run_pipeline
from compressor.pipeline.distill_stage import choose_final
from compressor.pipeline.split_guard import TEST_READERS, GuardedSplit, TestSplitRead
from compressor.spec import parse_spec
from tests.synthetic import fast_spec, statuses

pytestmark = pytest.mark.slow

EPOCHS = 3
TRAINING = {"epochs": EPOCHS, "batch_size": 64, "optimizer": {"name": "sgd", "lr": 0.05},
            "schedule": {"name": "constant"}, "select": "best_val"}
ROBUSTNESS = {"enabled": True, "models": "final", "samples": 16,
              "attacks": {"methods": ["fgsm"], "linf_eps": ["8/255"], "l2_eps": []},
              "corruptions": {"names": ["contrast"], "severities": [1]},
              "smoothing": {"n0": 10, "n": 50, "predict_n": 20, "samples": 4, "radii": [0.0]},
              "landscape": {"grid": 3, "samples": 16}}


@pytest.fixture(scope="module")
def validated_run(tmp_path_factory):
    """A run with best_val everywhere, early stopping for the teachers, certify, int8 and TensorBoard tracking;
    every use of the test split is recorded with the stage that made it."""
    root = tmp_path_factory.mktemp("validated")
    raw = fast_spec(
        name="valrun", noise={"kind": "symmetric", "rate": 0.3}, robustness=ROBUSTNESS,
        teachers={"training": {**TRAINING, "early_stopping": {"enabled": True, "patience": 1}}},
        distillation={"training": TRAINING, "averaging": {"warmup_epochs": 0}},
        export={"quantize": {"enabled": True, "mode": "dynamic"}},
        tracking={"backend": "tensorboard", "dir": str(root / "tb")},
    )
    spec = parse_spec(raw)
    readers = []
    check = GuardedSplit._check

    def recording(self, what):
        readers.append(self._stage())
        check(self, what)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(GuardedSplit, "_check", recording)
        results = run_pipeline(spec, root / "run")
    return spec, root, results, set(readers)


def test_only_the_reporting_stages_read_the_test_split(validated_run):
    _, _, results, readers = validated_run
    assert set(statuses(results).values()) == {"ran"}  # a stage reading the test split would have raised
    assert {"metrics", "certify", "report"} <= readers <= TEST_READERS  # the recording saw the readers


def test_the_guard_refuses_every_other_stage():
    running = {"stage": ""}
    split = GuardedSplit([1, 2, 3], lambda: running["stage"])
    for stage in ("data", "metrics", "certify", "report", ""):
        running["stage"] = stage
        assert len(split) == 3
    for stage in ("teachers", "distill", "export", "baselines"):
        running["stage"] = stage
        with pytest.raises(TestSplitRead, match=f"the {stage} stage read the test split"):
            len(split)
        with pytest.raises(TestSplitRead):
            split.images  # noqa: B018


def test_trainings_keep_their_best_validation_epoch_and_metrics_show_the_curves(validated_run):
    _, root, _, _ = validated_run
    run = root / "run"
    metrics = read_json(run / "metrics.json")
    validation = metrics["validation"]
    assert validation["samples"] == metrics["noise"]["val"]["samples"] > 0
    assert set(validation["curves"]) == {"teacher_0", "teacher_1", "student"}
    for name, curve in validation["curves"].items():
        kept = validation["selection"][name]
        assert len(curve["accuracy"]) == len(curve["loss"]) == kept["epochs_run"]
        best = max(range(kept["epochs_run"]), key=lambda e: (curve["accuracy"][e], -curve["loss"][e], -e)) + 1
        assert kept["select"] == "best_val" and kept["epoch"] == best
        assert kept["val_accuracy"] == curve["accuracy"][best - 1]
    assert validation["selection"]["student"]["epochs_run"] == EPOCHS  # no early stopping for the student
    summary = read_json(run / "student" / "summary.json")
    assert metrics["final_model"] == validation["final"] == choose_final(summary["val"], True, "best_val")
    assert set(metrics["test"]) == {"teacher_0", "teacher_1", "student", "student_averaged"}
    report = (run / "report.md").read_text()
    assert "### Validation" in report and "kept epoch" in report and "val accuracy" in report
    assert (run / "plots" / "training_curves.png").stat().st_size > 0


def test_parity_and_the_int8_gate_are_decided_on_the_validation_split(validated_run):
    _, root, _, _ = validated_run
    export = read_json(root / "run" / "export.json")
    samples = read_json(root / "run" / "metrics.json")["validation"]["samples"]
    assert export["parity"]["images"] == "validation split" and export["parity"]["samples"] == samples
    assert export["int8"]["split"] == "validation" and export["int8"]["samples"] == samples
    assert "validation accuracy" in export["int8"]["reason"]


def test_tensorboard_holds_every_epoch_and_the_final_metrics(validated_run):
    spec, root, _, _ = validated_run
    metrics = read_json(root / "run" / "metrics.json")
    events = EventAccumulator(str(root / "tb" / tracking.run_name(spec.model_dump(mode="json")))).Reload()
    tags = set(events.Tags()["scalars"])
    for model, curve in metrics["validation"]["curves"].items():
        for figure in ("train_loss", "train_accuracy", "val_loss", "val_accuracy"):
            assert f"{model}/{figure}" in tags
        logged = events.Scalars(f"{model}/val_accuracy")
        assert [e.step for e in logged] == list(range(1, len(curve["accuracy"]) + 1))
        assert [e.value for e in logged] == pytest.approx(curve["accuracy"])
    choice = read_json(root / "run" / "student" / "summary.json")["label_issues_choice"]
    assert set(choice) == {"report", "drop"}  # data.label_issues: auto trained two candidates, each logged live
    for mode in choice:
        assert f"label_issues_{mode}/student/val_accuracy" in tags
    final = metrics["final_model"]
    logged = events.Scalars(f"final/{final}/test_accuracy")
    assert logged[-1].value == pytest.approx(metrics["test"][final]["accuracy"])
    assert "student/kd" in tags  # the methods' figures too
    text = events.Tensors("spec/text_summary")[0].tensor_proto.string_val[0].decode()  # the spec as text
    assert "distillation.training.select: best_val" in text and "noise.rate: 0.3" in text


def test_a_split_without_validation_samples(tmp_path):
    """select: last runs (parity on probe images, int8 refused); best_val and early stopping fail clearly."""
    raw = fast_spec(data={"val_fraction": 0.0}, export={"quantize": {"enabled": True, "mode": "dynamic"}})
    results = run_pipeline(parse_spec(raw), tmp_path / "last")
    assert statuses(results)["report"] == "ran"
    for teacher in ("teacher_0", "teacher_1"):  # select: auto without validation samples: no decision, last epoch
        assert read_json(tmp_path / "last" / "teachers" / f"{teacher}.json")["selection"].get("select") != "best_val"
    export = read_json(tmp_path / "last" / "export.json")
    assert export["parity"]["images"] == "random probe, no validation split"
    assert not export["int8"]["passed"] and "no validation images" in export["int8"]["reason"]
    assert "### Validation" not in (tmp_path / "last" / "report.md").read_text()
    bad = fast_spec(data={"val_fraction": 0.0}, distillation={"training": {**TRAINING, "epochs": 2}})
    with pytest.raises(StageError, match="distillation.training: select: best_val need validation samples"):
        run_pipeline(parse_spec(bad), tmp_path / "best")


def test_mlflow_without_its_extra_is_one_line_and_exit_2(tmp_path, monkeypatch):
    monkeypatch.setattr(tracking, "installed", lambda package: package != "mlflow")
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(yaml.safe_dump(fast_spec(tracking={"backend": "mlflow"})))
    for command in ("run", "validate"):
        result = CliRunner().invoke(main, [command, str(spec_file), *(["--out", str(tmp_path / "r")]
                                                                       if command == "run" else [])])
        assert result.exit_code == 2, result.output
        lines = [line for line in result.output.splitlines() if line.strip()]
        assert lines == ['error: tracking.backend: mlflow needs the optional extra: pip install ".[mlflow]" (or pip '
                         'install mlflow)']
    assert not (tmp_path / "r").exists()  # refused before anything ran
    with pytest.raises(tracking.TrackingError, match=r"\.\[mlflow\]"):
        tracking.open_tracker(parse_spec(fast_spec(tracking={"backend": "mlflow"})).model_dump(mode="json"), tmp_path)


def test_select_auto_keeps_the_teachers_best_validation_epoch_and_the_students_last(tmp_path):
    """The default ``select: auto``: teachers decide on validation when there is a split, the student does not."""
    spec = parse_spec(fast_spec(noise={"kind": "symmetric", "rate": 0.3}))
    assert spec.teachers.training.select == spec.distillation.training.select == "auto"
    run_pipeline(spec, tmp_path / "run")
    for teacher in ("teacher_0", "teacher_1"):
        kept = read_json(tmp_path / "run" / "teachers" / f"{teacher}.json")["selection"]
        history = read_json(tmp_path / "run" / "teachers" / f"{teacher}.json")["history"]
        assert kept["select"] == "best_val" and kept["val_accuracy"] == max(history["val_accuracy"])
    student = read_json(tmp_path / "run" / "student" / "summary.json")
    assert student["selection"]["select"] == "last" and student["final"] == "student_averaged"
