"""Export with metadata, int8 quantization behind the accuracy gate, and ``compressor export`` on a small run."""

from __future__ import annotations

import hashlib
import json
import shutil

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from compressor.export import OnnxClassifier, read_metadata
from compressor.export.onnx_export import STACK_TRACE_KEY
from compressor.export.quantize import accuracy_gate, quantize_model, quantize_with_gate

from compressor.checkpoint import ModelInfo, save_classifier
from compressor.cli import main
from compressor.io import read_json
from compressor.pipeline import run_pipeline
from compressor.run_layout import RunLayout
from compressor.spec import dump_spec, parse_spec
from tests.synthetic import fast_spec

pytestmark = pytest.mark.slow

QUANTIZE = {"enabled": True, "mode": "static", "calibration_samples": 128, "max_accuracy_drop": 0.05}
METADATA_KEYS = {"compressor_version", "metadata_version", "task", "class_names", "input_name", "output_name",
                 "input_channels", "input_size", "input_range", "normalization_mean", "normalization_std", "arch",
                 "spec_hash", "precision"}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("run")
    spec = parse_spec(fast_spec(export={"quantize": dict(QUANTIZE)}))
    results = run_pipeline(spec, run_dir)
    from compressor.data import prepare_data

    return spec, run_dir, results, prepare_data(spec).test


def validation(spec, run_dir):
    """The run's validation split with its labels as trained on (noisy): what the export decides on."""
    from compressor.pipeline.context import RunContext

    return RunContext(spec=spec, run_dir=run_dir, device="cpu").bundle().val


def ops(path) -> set[str]:
    return {node.op_type for node in onnx.load(str(path)).graph.node}


def test_fp32_export_carries_metadata_and_a_dynamic_batch(run):
    spec, run_dir, _, test = run
    meta = read_metadata(run_dir / "student.onnx")
    assert METADATA_KEYS <= set(meta)
    assert json.loads(meta["class_names"]) == [str(i) for i in range(10)]
    assert (meta["task"], meta["input_channels"], meta["input_size"], meta["precision"]) == ("multiclass", "1", "8",
                                                                                             "fp32")
    assert meta["spec_hash"] == hashlib.sha256(dump_spec(spec).encode()).hexdigest()
    proto = onnx.load(str(run_dir / "student.onnx"))
    assert next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")) >= 17
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param  # symbolic batch axis
    # no source path of the exporting machine: the file is the same from any checkout
    for name in ("student.onnx", "student.int8.onnx"):
        nodes = onnx.load(str(run_dir / name)).graph.node
        assert not [entry for node in nodes for entry in node.metadata_props
                    if entry.key == STACK_TRACE_KEY or ".py" in entry.value]
    # the runtime reproduces the accuracy the run reported for the final student
    accuracy = np.mean([row[0].index == label for row, label in
                        zip(OnnxClassifier(run_dir / "student.onnx").predict(test.images.numpy()), test.labels,
                            strict=True)])
    metrics = read_json(run_dir / "metrics.json")
    assert accuracy == pytest.approx(metrics["test"][metrics["final_model"]]["accuracy"], abs=1.5 / len(test))


def test_static_int8_passes_the_gate_and_is_deployable(run):
    spec, run_dir, results, _ = run
    int8 = read_json(run_dir / "export.json")["int8"]
    assert int8["passed"] and int8["file"] == "student.int8.onnx" and int8["rejected_file"] is None
    assert not (run_dir / "student.int8.rejected.onnx").exists()
    assert int8["accuracy_fp32"] - int8["accuracy_int8"] == pytest.approx(int8["accuracy_drop"])
    assert int8["accuracy_drop"] <= QUANTIZE["max_accuracy_drop"]
    assert int8["quantization"]["format"] == "QDQ" and int8["quantization"]["calibration_samples"] == 128
    path = run_dir / "student.int8.onnx"
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops(path)
    onnx.checker.check_model(str(path), full_check=True)
    meta = read_metadata(path)
    assert meta["precision"] == "int8" and json.loads(meta["quantization"])["passed"] is True
    assert json.loads(meta["class_names"]) == [str(i) for i in range(10)]
    # the gate's int8 accuracy is what the runtime measures on the validation split (its labels as given)
    val = validation(spec, run_dir)
    assert int8["split"] == "validation" and int8["samples"] == len(val) > 0
    clf = OnnxClassifier(path)
    accuracy = float((clf.logits(val.images.numpy()).argmax(1) == val.labels).mean())
    assert accuracy == pytest.approx(int8["accuracy_int8"], abs=1e-9)
    assert {r.name: r.summary for r in results}["export"]["int8_passed"] is True


@pytest.mark.parametrize(
    ("fp32", "int8", "limit", "passed"),
    [(0.90, 0.89, 0.01, True), (0.90, 0.88, 0.01, False), (0.90, 0.95, 0.0, True), (0.90, 0.8999, 0.0, False)],
)
def test_accuracy_gate(fp32, int8, limit, passed):
    ok, reason = accuracy_gate(fp32, int8, limit)
    assert ok is passed
    assert f"{int8:.4f}" in reason and f"{fp32:.4f}" in reason and f"{limit:.4f}" in reason
    assert reason.startswith("accepted" if passed else "refused")


def test_refused_int8_is_not_deployable_and_the_run_says_why(run, tmp_path, monkeypatch, capsys):
    spec, run_dir, _, _ = run
    import compressor.export.quantize as quantize

    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    real = quantize.int8_logits
    # An int8 model that predicts the next class: its accuracy collapses, so the gate must refuse it.
    monkeypatch.setattr(quantize, "int8_logits", lambda path, images: np.roll(real(path, images), 1, axis=1))
    RunLayout(copy).stage_marker("export").unlink()  # re-run the export stage only
    results = {r.name: r for r in run_pipeline(spec, copy)}
    assert results["export"].status == "ran" and results["distill"].status == "skipped"
    int8 = read_json(copy / "export.json")["int8"]
    assert not int8["passed"] and int8["file"] is None and int8["rejected_file"] == "student.int8.rejected.onnx"
    assert "refused" in int8["reason"] and "max_accuracy_drop" in int8["reason"]
    assert int8["accuracy_drop"] > QUANTIZE["max_accuracy_drop"]
    assert not (copy / "student.int8.onnx").exists()  # the earlier, passing int8 file is gone too
    assert (copy / "student.int8.rejected.onnx").exists() and (copy / "student.onnx").exists()
    assert "not written as deployable model" in capsys.readouterr().err


def test_dynamic_quantization(run, tmp_path):
    _, run_dir, _, test = run
    x = test.images.numpy().astype(np.float32) / 255.0
    report = quantize_with_gate(run_dir / "student.onnx", tmp_path / "s.int8.onnx", tmp_path / "s.rejected.onnx",
                                mode="dynamic", calibration=None, images=x, labels=test.labels,
                                task="multiclass", max_accuracy_drop=1.0)
    assert report["passed"] and (tmp_path / "s.int8.onnx").exists() and not (tmp_path / "s.rejected.onnx").exists()
    assert {"ConvInteger", "MatMulInteger"} & ops(tmp_path / "s.int8.onnx")
    assert report["agreement"] > 0.5 and 0.0 <= report["accuracy_int8"] <= 1.0
    with pytest.raises(ValueError, match="needs calibration images"):
        quantize_model(run_dir / "student.onnx", tmp_path / "x.onnx", mode="static", calibration=None)


def test_cli_export_run_dir(run, tmp_path):
    spec, run_dir, _, _ = run
    out = tmp_path / "deploy" / "model.onnx"
    result = CliRunner().invoke(main, ["export", str(run_dir), "--out", str(out), "--int8", "dynamic", "--opset",
                                       "17", "--max-accuracy-drop", "1"])
    assert result.exit_code == 0, result.output
    report = read_json(tmp_path / "deploy" / "model.export.json")
    assert report["parity"]["passed"] and report["parity"]["images"] == "validation split"
    assert report["int8"]["passed"] and report["int8"]["mode"] == "dynamic"
    assert (tmp_path / "deploy" / "model.int8.onnx").exists()
    assert next(o.version for o in onnx.load(str(out)).opset_import if o.domain in ("", "ai.onnx")) == 17
    assert read_metadata(out)["spec_hash"] == read_metadata(run_dir / "student.onnx")["spec_hash"]


def test_cli_export_checkpoint(run, tmp_path):
    _, run_dir, _, _ = run
    runner = CliRunner()
    # a teacher checkpoint inside the run: its data gives the parity images (the validation split)
    result = runner.invoke(main, ["export", str(run_dir / "teachers" / "teacher_1.safetensors"), "--out",
                                  str(tmp_path / "teacher.onnx"), "--int8", "none"])
    assert result.exit_code == 0, result.output
    report = read_json(tmp_path / "teacher.export.json")
    teacher_accuracy = read_json(run_dir / "teachers" / "teacher_1.json")["selection"]["val_accuracy"]
    assert report["parity"]["images"] == "validation split" and report["int8"] is None
    assert report["parity"]["accuracy_onnx"] == pytest.approx(teacher_accuracy, abs=1e-3)
    assert read_metadata(tmp_path / "teacher.onnx")["arch"] == "small_cnn"
    # a checkpoint without a run: random probe images, no spec hash, and int8 refused for lack of data
    info = ModelInfo("tiny_cnn", 3, 5, 10, [0.5] * 3, [0.25] * 3, "multilabel", list("abcde"))
    save_classifier(info.build(), info, tmp_path / "alone" / "model.safetensors")
    result = runner.invoke(main, ["export", str(tmp_path / "alone" / "model.safetensors")])
    assert result.exit_code == 0, result.output
    out = tmp_path / "alone" / "deploy" / "model.onnx"
    report = read_json(tmp_path / "alone" / "deploy" / "model.export.json")
    assert report["parity"]["passed"] and report["parity"]["images"].startswith("random probe")
    assert report["parity"]["accuracy_onnx"] is None
    clf = OnnxClassifier(out)
    assert clf.metadata.task == "multilabel" and clf.input_shape == (3, 10, 10) and clf.metadata.raw["spec_hash"] == ""
    refused = runner.invoke(main, ["export", str(tmp_path / "alone" / "model.safetensors"), "--int8", "static"])
    assert refused.exit_code == 2 and "needs calibration and validation images" in refused.output


def test_cli_export_bad_sources(tmp_path):
    runner = CliRunner()
    (tmp_path / "empty").mkdir()
    result = runner.invoke(main, ["export", str(tmp_path / "empty")])
    assert result.exit_code == 2 and "not a finished run directory" in result.output
    (tmp_path / "weights.safetensors").write_text("nope")
    result = runner.invoke(main, ["export", str(tmp_path / "weights.safetensors")])
    assert result.exit_code == 2 and "not a compressor checkpoint" in result.output and "Traceback" not in result.output
