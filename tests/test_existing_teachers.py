"""Existing teachers and pretrained starts in the pipeline.

An accurate teacher (trained here on the clean labels of the digits) is given to a run whose training labels are
45% wrong, as an ONNX file and as safetensors weights with their architecture: the student learns close to the
teacher and far above a student trained alone on those labels. Pretrained starts are loaded where the spec says;
bad files stop the run with exit status 2 and one line naming the file.
"""

from __future__ import annotations

import os
import subprocess
import sys

import onnx
import pytest
import torch
import yaml
from click.testing import CliRunner
from safetensors.torch import load_file, save_file

from compressor.checkpoint import ModelInfo, load_classifier
from compressor.cli import main
from compressor.data import prepare_data
from compressor.io import read_json
from compressor.metrics import split_metrics
from compressor.models.onnx_teacher import SETTINGS_KEY, read_props
from compressor.pipeline import InputFileError, run_pipeline, stage_keys
from compressor.pipeline.runner import STAGES
from compressor.recipes import train_supervised
from compressor.run_layout import RunLayout
from compressor.seeding import generator, seed_everything
from compressor.spec import parse_spec
from compressor.spec.training import TrainSpec
from tests.synthetic import FAST_TRAINING, fast_spec, statuses

NOISE = {"kind": "symmetric", "rate": 0.45}
UP_TO_METRICS = [s for s in STAGES if s.name in ("data", "teachers", "distill", "metrics")]
STILL = {"epochs": 1, "batch_size": 64, "optimizer": {"name": "sgd", "lr": 1e-12, "momentum": 0.0,
                                                      "weight_decay": 0.0}, "schedule": {"name": "constant"}}


def stages(*names):
    return [s for s in STAGES if s.name in names]


def listed(models: list, **sections) -> dict:
    """The fast test spec with ``teachers.models`` (the teacher count is taken from the list)."""
    raw = fast_spec(**sections)
    raw["teachers"] = {**raw["teachers"], "models": models}
    del raw["subsets"]["count"]
    return raw


def noisy_spec(**sections) -> dict:
    """The fast test spec on the digits with 45% symmetric label noise, distilled for three epochs without parameter
    averaging: with and without a teacher, the runs differ in the teacher alone."""
    raw = fast_spec(noise=NOISE, **sections)
    raw["distillation"]["training"]["epochs"] = 3
    raw["distillation"]["averaging"] = {"enabled": False}
    if "models" in raw["teachers"]:
        del raw["subsets"]["count"]  # taken from the list
    return raw


@pytest.fixture(scope="module")
def clean_teacher(tmp_path_factory):
    """A small_cnn trained on the clean digits labels: as ONNX (it takes [0, 1] pixels, normalisation inside) and as
    the safetensors weights of its backbone (the data's normalisation applies), with its clean-test accuracy."""
    folder = tmp_path_factory.mktemp("teacher")
    bundle = prepare_data(parse_spec(fast_spec()))
    seed_everything(0, "clean teacher")
    info = ModelInfo("small_cnn", bundle.channels, bundle.num_classes, bundle.image_size, bundle.mean, bundle.std,
                     bundle.task, bundle.class_names)
    model = info.build()
    train_supervised(model, bundle.train, TrainSpec.model_validate({**FAST_TRAINING, "epochs": 5}), bundle.task,
                     "cpu", generator(0, "clean teacher"))
    model.eval()
    torch.onnx.export(model, (torch.rand(2, 1, 8, 8),), str(folder / "teacher.onnx"), dynamo=False,
                      input_names=["pixels"], dynamic_axes={"pixels": {0: "n"}})
    save_file(model.backbone.state_dict(), str(folder / "teacher.safetensors"))
    accuracy = split_metrics(model, bundle.test, bundle.task, "cpu")["accuracy"]
    return folder, accuracy


@pytest.fixture(scope="module")
def alone(tmp_path_factory):
    """Final accuracy of the student trained alone on the noisy labels (alpha 0: no teacher)."""
    run = tmp_path_factory.mktemp("alone")
    run_pipeline(parse_spec(noisy_spec(distillation={"alpha": 0.0})), run, stages=UP_TO_METRICS)
    metrics = read_json(run / "metrics.json")
    return metrics["test"][metrics["final_model"]]["accuracy"]


def distil_from(run_dir, teacher: dict) -> dict:
    spec = parse_spec(noisy_spec(teachers={"models": [teacher]}))
    results = run_pipeline(spec, run_dir, stages=UP_TO_METRICS)
    assert statuses(results) == {"data": "ran", "teachers": "ran", "distill": "ran", "metrics": "ran"}
    return read_json(run_dir / "metrics.json")


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["onnx", "safetensors"])
def test_an_accurate_existing_teacher_lifts_the_student_above_the_noise(tmp_path, clean_teacher, alone, kind):
    folder, teacher_accuracy = clean_teacher
    entry = {"path": str(folder / "teacher.onnx")} if kind == "onnx" else {
        "path": str(folder / "teacher.safetensors"), "arch": "small_cnn"}
    metrics = distil_from(tmp_path, entry)
    student = metrics["test"][metrics["final_model"]]["accuracy"]
    print(f"{kind}: teacher {teacher_accuracy:.4f}, student {student:.4f}, alone {alone:.4f}")  # pytest -rP shows it
    assert teacher_accuracy >= 0.93
    # the installed teacher is the same model with the right input normalisation: the same test accuracy
    assert metrics["test"]["teacher_0"]["accuracy"] == pytest.approx(teacher_accuracy, abs=1e-9)
    assert student >= teacher_accuracy - 0.06, (student, teacher_accuracy)
    assert student >= alone + 0.08, (student, alone)  # measured: 0.983 vs 0.853 (pytest -rP -k accurate)
    layout = RunLayout(tmp_path)
    summary = read_json(layout.teacher_summary(0))
    assert summary["origin"] == "file" and summary["history"] == {} and summary["source"] == entry["path"]
    if kind == "onnx":
        assert not layout.teacher_weights(0).exists()
        assert '"normalization": "none"' in read_props(layout.teacher_onnx(0))[SETTINGS_KEY]
    else:
        model, info = load_classifier(layout.teacher_weights(0))
        assert info.arch == "small_cnn" and info.mean == metrics_mean(tmp_path)
    rerun = run_pipeline(parse_spec(noisy_spec(teachers={"models": [entry]})), tmp_path, stages=UP_TO_METRICS)
    assert set(statuses(rerun).values()) == {"skipped"}


def metrics_mean(run_dir) -> list[float]:
    return read_json(RunLayout(run_dir).data_summary)["mean"]


def test_a_changed_teacher_file_changes_the_stage_keys(tmp_path):
    path = tmp_path / "t.onnx"
    path.write_bytes(b"one")
    spec = parse_spec(listed([str(path)]))
    before = stage_keys(spec)
    path.write_bytes(b"two")
    after = stage_keys(spec)
    assert before["data"] == after["data"]
    assert all(before[name] != after[name] for name in ("teachers", "distill", "metrics"))
    graph = three_class_onnx(tmp_path / "graph.onnx")  # its weights in graph.bin beside it
    onnx.save_model(onnx.load(str(graph)), str(graph), save_as_external_data=True, location="graph.bin",
                    size_threshold=0)
    spec = parse_spec(listed([str(graph)]))
    before = stage_keys(spec)["teachers"]
    (tmp_path / "graph.bin").write_bytes(b"other weights")
    assert stage_keys(spec)["teachers"] != before
    student = tmp_path / "s.safetensors"
    student.write_bytes(b"one")
    with_start = parse_spec(fast_spec(student={"pretrained": str(student)}))
    keys = stage_keys(with_start)
    student.write_bytes(b"two")
    changed = stage_keys(with_start)
    assert changed["teachers"] == keys["teachers"] and changed["distill"] != keys["distill"]


def parameters(state: dict) -> dict:
    """The trainable tensors of a classifier state (batch-norm statistics move even at learning rate 0)."""
    return {k: v for k, v in state.items() if not any(s in k for s in ("running_", "num_batches", "mean", "std"))}


@pytest.mark.slow
def test_pretrained_and_finetuned_starts_are_loaded(tmp_path, clean_teacher):
    """At a vanishing learning rate every trained model ends where its start file put it."""
    folder, _ = clean_teacher
    weights = str(folder / "teacher.safetensors")
    start = {k: v for k, v in load_file(weights).items()}
    expected = parameters({f"backbone.{k}": v for k, v in start.items()})

    def assert_started(path):
        got = parameters(load_file(str(path)))
        assert got.keys() == expected.keys() and all(torch.allclose(got[k], expected[k], atol=1e-6) for k in got)

    spec = parse_spec(fast_spec(teachers={"archs": ["small_cnn"], "pretrained": weights, "training": STILL}))
    run_pipeline(spec, tmp_path / "pretrained", stages=stages("data", "teachers"))
    for i in range(2):
        assert_started(RunLayout(tmp_path / "pretrained").teacher_weights(i))
        assert read_json(RunLayout(tmp_path / "pretrained").teacher_summary(i))["origin"] == "trained"

    entry = {"path": weights, "arch": "small_cnn", "finetune": True}
    spec = parse_spec(listed([entry], teachers={"training": STILL}))
    run_pipeline(spec, tmp_path / "finetuned", stages=stages("data", "teachers"))
    assert_started(RunLayout(tmp_path / "finetuned").teacher_weights(0))
    summary = read_json(RunLayout(tmp_path / "finetuned").teacher_summary(0))
    assert summary["origin"] == "finetuned" and len(summary["history"]["loss"]) == 1

    spec = parse_spec(fast_spec(student={"arch": "small_cnn", "pretrained": weights},
                                distillation={"alpha": 0.0, "training": STILL, "averaging": {"enabled": False}}))
    run_pipeline(spec, tmp_path / "student", stages=stages("data", "distill"))
    assert_started(RunLayout(tmp_path / "student").final_student)


def half_of(source, target):
    """``target``: the first half of ``source`` (a download or copy cut short)."""
    content = source.read_bytes()
    target.write_bytes(content[: len(content) // 2])
    return target


def three_class_onnx(path):
    """An ONNX model for the digits' 1x8x8 images with 3 outputs (the digits have 10 classes)."""
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 3))
    torch.onnx.export(model, (torch.rand(2, 1, 8, 8),), str(path), dynamo=False, input_names=["x"],
                      dynamic_axes={"x": {0: "n"}})
    return path


def wide_weights(path):
    save_file(ModelInfo("small_cnn_wide", 1, 10, 8, [0.0], [1.0]).build().backbone.state_dict(), str(path))
    return path


@pytest.mark.parametrize("make, arch, expected", [
    (lambda t, d: half_of(d / "teacher.onnx", t / "cut.onnx"), None, "onnxruntime cannot load this model"),
    (lambda t, d: half_of(d / "teacher.safetensors", t / "cut.safetensors"), "small_cnn",
     "not a readable safetensors file"),
    (lambda t, d: (t / "weights.onnx").write_bytes((d / "teacher.safetensors").read_bytes()) and t / "weights.onnx",
     None, "onnxruntime cannot load this model"),  # not ONNX at all
    (lambda t, d: three_class_onnx(t / "three.onnx"), None, "the model has 3 outputs, the data has 10 classes"),
    (lambda t, d: wide_weights(t / "wide.safetensors"), "small_cnn", "does not fit small_cnn for 1x8x8 images"),
    (lambda t, d: d / "teacher.safetensors", "tiny_cnn", "does not fit tiny_cnn for 1x8x8 images"),
], ids=["truncated-onnx", "truncated-safetensors", "not-onnx", "class-count", "shapes", "other-arch"])
def test_unusable_teacher_files_stop_the_run_with_one_line(tmp_path, clean_teacher, make, arch, expected):
    """Truncated, not ONNX, the wrong class count, the wrong shapes: exit status 2, one line naming the file,
    before anything trains."""
    bad = make(tmp_path, clean_teacher[0])
    spec = parse_spec(listed([{"path": str(bad), **({"arch": arch} if arch else {})}]))
    with pytest.raises(InputFileError) as error:
        run_pipeline(spec, tmp_path / "run", stages=stages("data", "teachers"))
    message = str(error.value)
    assert error.value.exit_code == 2 and message.startswith(f"{bad}: ") and expected in message, message
    assert "\n" not in message
    assert not any((tmp_path / "run" / "teachers").glob("teacher_0.*"))


@pytest.mark.slow
def test_a_given_onnx_teacher_runs_live_and_is_named_in_the_report(tmp_path, clean_teacher):
    """Without a view pool the KD hook calls the ONNX teacher on every batch; metrics and the report say where
    the teacher came from."""
    folder, teacher_accuracy = clean_teacher
    raw = listed([str(folder / "teacher.onnx")], distillation={"view_pool": 0, "training": {
        **FAST_TRAINING, "epochs": 1}})
    results = run_pipeline(parse_spec(raw), tmp_path, stages=stages("data", "teachers", "distill", "metrics",
                                                                       "report"))
    assert statuses(results)["report"] == "ran"
    assert not RunLayout(tmp_path).view_pool.exists()
    assert read_json(RunLayout(tmp_path).student_summary)["teacher_logits"] == "live"
    metrics = read_json(tmp_path / "metrics.json")
    assert metrics["teachers"][0]["origin"] == "file" and metrics["teachers"][0]["source"].endswith("teacher.onnx")
    assert metrics["test"]["teacher_0"]["accuracy"] == pytest.approx(teacher_accuracy, abs=1e-9)
    assert metrics["test"][metrics["final_model"]]["accuracy"] > 0.5  # one epoch from an accurate teacher
    assert "| teacher_0 | teacher (given: teacher.onnx) | onnx |" in (tmp_path / "report.md").read_text()


def test_cli_exits_2_naming_a_missing_teacher_file(tmp_path):
    missing = tmp_path / "nowhere" / "teacher.onnx"
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(listed([str(missing)])))
    result = CliRunner().invoke(main, ["run", str(spec), "--out", str(tmp_path / "run")],
                                env={"COMPRESSOR_QUIET": "1"})
    assert result.exit_code == 2, result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error")]
    assert errors == [f"error: {missing}: ONNX model not found"] and "Traceback" not in result.stderr, result.stderr


@pytest.mark.slow
def test_two_process_run_installs_once_trains_the_finetuned_teacher_and_fails_alike(tmp_path):
    """``--nproc 2``: rank 0 alone installs the ONNX teacher, the fine-tuned one trains, every rank distils from
    both; a bad file stops every rank with exit status 2 and one line (no rank waits for the others)."""
    info = ModelInfo("tiny_cnn", 1, 10, 8, [0.0], [1.0])
    torch.manual_seed(0)
    model = info.build().eval()
    torch.onnx.export(model, (torch.rand(2, 1, 8, 8),), str(tmp_path / "t.onnx"), dynamo=False,
                      input_names=["x"], dynamic_axes={"x": {0: "n"}})
    save_file(model.backbone.state_dict(), str(tmp_path / "t.safetensors"))
    good = listed([str(tmp_path / "t.onnx"), {"path": str(tmp_path / "t.safetensors"), "arch": "tiny_cnn",
                                              "finetune": True}], export={"onnx": False},
                  teachers={"training": {**FAST_TRAINING, "epochs": 1}},
                  distillation={"training": {**FAST_TRAINING, "epochs": 1}})
    bad = listed([str(tmp_path / "t.onnx"), {"path": str(tmp_path / "t.safetensors"), "arch": "small_cnn"}])
    env = {**os.environ, "COMPRESSOR_QUIET": "1"}
    results = {}
    for name, raw in (("good", good), ("bad", bad)):
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(raw))
        results[name] = subprocess.run([sys.executable, "-m", "compressor", "run", str(tmp_path / f"{name}.yaml"),
                                        "--nproc", "2", "--out", str(tmp_path / name)], capture_output=True,
                                       text=True, env=env, timeout=600)
    assert results["good"].returncode == 0, results["good"].stderr[-3000:]
    layout = RunLayout(tmp_path / "good")
    assert read_json(layout.teacher_summary(0))["origin"] == "file"
    assert read_json(layout.teacher_summary(1))["origin"] == "finetuned"
    assert layout.teacher_onnx(0).is_file() and layout.final_student.is_file()
    assert read_json(layout.student_summary)["world_size"] == 2
    assert results["bad"].returncode == 2, results["bad"].stderr[-3000:]
    errors = [line for line in results["bad"].stderr.splitlines() if line.startswith("error")]
    assert len(errors) == 1, results["bad"].stderr  # rank 0's line only
    assert errors[0].startswith(f"error: {tmp_path / 't.safetensors'}: does not fit small_cnn"), errors
    assert "Traceback" not in results["bad"].stderr
