"""Issue 15, defects 8, 9, 10, 12 and 13 (run directory): what a run writes can be trusted after a kill, a failed
run, or a damaged file; internal errors and bad model files exit with the documented status and one line."""

from __future__ import annotations

import os

import pytest
import torch
from click.testing import CliRunner

import compressor.io as io
from compressor.checkpoint import CheckpointError, ModelInfo, load_classifier, save_classifier
from compressor.cli import main
from compressor.data import DataError
from compressor.io import finish_publish, publish_together, read_json, sha256_file
from compressor.pipeline import run_pipeline
from compressor.pipeline.data_stage import DATA_STAGE
from compressor.pipeline.teachers_stage import TEACHERS_STAGE
from compressor.run_layout import RunLayout
from compressor.spec import parse_spec
from tests.method_cases import one_thread  # noqa: F401  (fixture)
from tests.synthetic import fast_spec, statuses

DATA_ONLY = [DATA_STAGE]


def snapshot(root) -> dict[str, bytes]:
    """Relative path -> bytes of every file under ``root``."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# Defect 10: markers hash their artifacts; a damaged teacher is retrained ------------------------------------------

@pytest.mark.usefixtures("one_thread")
def test_damaged_teacher_reruns_the_teachers_stage_and_only_that_teacher(tmp_path):
    spec = parse_spec(fast_spec(teachers={"training": {"epochs": 1, "batch_size": 64}}))
    stages = [DATA_STAGE, TEACHERS_STAGE]
    run_dir = tmp_path / "run"
    run_pipeline(spec, run_dir, stages=stages)
    layout = RunLayout(run_dir)
    marker = read_json(layout.stage_marker("teachers"))
    assert marker["artifacts"]["teachers/teacher_1.safetensors"] == sha256_file(layout.teacher_weights(1))
    good = layout.teacher_weights(1).read_bytes()
    summary_0 = layout.teacher_summary(0).read_bytes()

    layout.teacher_weights(1).write_bytes(good[: len(good) // 2])  # truncated (e.g. a copy cut short)
    assert statuses(run_pipeline(spec, run_dir, stages=stages)) == {"data": "skipped", "teachers": "ran"}
    assert layout.teacher_weights(1).read_bytes() == good  # retrained, byte for byte
    assert layout.teacher_summary(0).read_bytes() == summary_0  # the intact teacher was kept, not retrained

    flipped = bytearray(good)
    flipped[-5] ^= 0xFF  # same size, one weight changed: only the hash can tell
    layout.teacher_weights(1).write_bytes(bytes(flipped))
    assert statuses(run_pipeline(spec, run_dir, stages=stages))["teachers"] == "ran"
    assert layout.teacher_weights(1).read_bytes() == good


def test_truncated_or_foreign_checkpoint_is_a_checkpoint_error(tmp_path):
    info = ModelInfo("tiny_cnn", 1, 3, 8, [0.3], [0.3])
    path = tmp_path / "m.safetensors"
    save_classifier(info.build(), info, path)
    path.write_bytes(path.read_bytes()[:-64])
    with pytest.raises(CheckpointError, match="m.safetensors"):
        load_classifier(path)
    other = ModelInfo("small_cnn", 1, 3, 8, [0.3], [0.3])
    save_classifier(other.build(), info, path)  # metadata says tiny_cnn, the tensors are small_cnn's
    with pytest.raises(CheckpointError, match="not a complete compressor checkpoint"):
        load_classifier(path)


def test_user_checkpoint_that_does_not_load_exits_2(tmp_path):
    info = ModelInfo("tiny_cnn", 1, 3, 8, [0.3], [0.3])
    path = tmp_path / "user.safetensors"
    save_classifier(ModelInfo("small_cnn", 1, 3, 8, [0.3], [0.3]).build(), info, path)
    result = CliRunner().invoke(main, ["export", str(path), "--out", str(tmp_path / "u.onnx")])
    assert result.exit_code == 2 and "not a complete compressor checkpoint" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "u.onnx").exists()


# Defect 8: an export's files are published together --------------------------------------------------------------

def test_publish_killed_midway_never_mixes_old_and_new_files(tmp_path, monkeypatch):
    old = {name: f"old {name}".encode() for name in ("student.onnx", "student.int8.onnx", "export.json")}
    new = {name: f"new {name}".encode() for name in ("student.onnx", "export.json")}  # no int8 this time
    for name, data in old.items():
        (tmp_path / name).write_bytes(data)
    staging = tmp_path / "staging"
    staging.mkdir()
    for name, data in new.items():
        (staging / name).write_bytes(data)
    files = {tmp_path / n: (staging / n if n in new else None) for n in old}
    journal = tmp_path / "journal.json"
    real_replace, calls = os.replace, []

    def killed_after_one(src, dst):
        if os.path.dirname(src) == str(staging):  # a staged file (not the journal's own atomic write)
            if calls:
                raise KeyboardInterrupt  # stands for SIGKILL between two renames
            calls.append(dst)
        real_replace(src, dst)

    monkeypatch.setattr(io.os, "replace", killed_after_one)
    with pytest.raises(KeyboardInterrupt):
        publish_together(files, journal)
    monkeypatch.setattr(io.os, "replace", real_replace)
    present = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file() and p.name in old}
    assert present and all(data == new[name] for name, data in present.items())  # only new files, never an old one
    assert journal.exists()
    assert finish_publish(journal)  # the next run completes the swap
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.name in old} == new  # the stale int8 is gone
    assert not journal.exists() and not finish_publish(journal)


# Defect 9: a failed run leaves an existing run directory as it was ----------------------------------------------

def test_run_with_bad_data_changes_nothing_in_an_existing_run(tmp_path):
    run_dir = tmp_path / "run"
    run_pipeline(parse_spec(fast_spec()), run_dir, stages=DATA_ONLY)
    before = snapshot(run_dir)
    assert "data/labels.npz" in before and ".compressor/stages/data.json" in before
    bad = parse_spec(fast_spec(seed=5, data={"source": "npz", "path": str(tmp_path / "missing.npz")}))
    with pytest.raises(DataError):
        run_pipeline(bad, run_dir)
    assert snapshot(run_dir) == before  # spec.yaml, labels, markers: untouched


# Defect 12: the same weights give the same bytes ------------------------------------------------------------------

def test_safetensors_bytes_do_not_depend_on_hash_map_order(tmp_path):
    info = ModelInfo("tiny_cnn", 1, 3, 8, [0.3], [0.3], class_names=["a", "b", "c"])
    model = info.build()
    blobs = set()
    for i in range(12):  # safetensors' metadata map takes a new random order each time (2 keys: 1 in 2 per save)
        save_classifier(model, info, tmp_path / f"{i}.safetensors", extra={"final": "student", "note": "é"})
        blobs.add((tmp_path / f"{i}.safetensors").read_bytes())
    assert len(blobs) == 1
    loaded, loaded_info = load_classifier(tmp_path / "0.safetensors")
    assert loaded_info == info
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value)


# Defect 13 (run directory): what a kill left behind is removed by the next run ---------------------------------

def test_next_run_removes_temporary_and_staged_files_of_a_killed_run(tmp_path):
    run_dir = tmp_path / "run"
    layout = RunLayout(run_dir)
    layout.teacher_weights(0).parent.mkdir(parents=True)
    empty = run_dir / ".student.safetensors.k2j4.tmp"
    partial = layout.teacher_weights(0).parent / ".teacher_0.safetensors.x81.tmp"
    staged = layout.staging("export") / "student.onnx"
    staged.parent.mkdir(parents=True)
    empty.write_bytes(b"")
    partial.write_bytes(b"half a teach")
    staged.write_bytes(b"an export that was never published")
    users = [run_dir / "notes.tmp", run_dir / "mine" / ".draft.tmp"]  # the user's files: not the run's to remove
    users[1].parent.mkdir()
    for path in users:
        path.write_text("keep")
    run_pipeline(parse_spec(fast_spec()), run_dir, stages=DATA_ONLY)
    assert not empty.exists() and not partial.exists() and not layout.staging_root.exists()
    assert all(path.read_text() == "keep" for path in users)


# Exit codes: internal errors log their traceback; bad model files exit 2 ----------------------------------------

def test_internal_error_prints_one_line_and_logs_the_traceback(tmp_path, monkeypatch):
    import yaml

    import compressor.pipeline as pipeline

    def broken(*args, **kwargs):
        raise RuntimeError("something no user can fix\nsecond line")

    monkeypatch.setattr(pipeline, "run_pipeline", broken)
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(yaml.safe_dump(fast_spec()))
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    result = CliRunner().invoke(main, ["run", str(spec_file), "--out", str(run_dir)], env={"COMPRESSOR_QUIET": "1"})
    log = RunLayout(run_dir).error_log
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "internal error (RuntimeError: something no user can fix)" in lines[0]
    assert str(log) in lines[0] and "Traceback" not in result.stderr
    assert "Traceback" in log.read_text() and "second line" in log.read_text()


def test_internal_error_without_run_directory_logs_to_a_temporary_file(monkeypatch):
    import compressor.spec as spec_module
    from compressor.cli import errors

    monkeypatch.setattr(spec_module, "dump_spec", lambda spec: 1 / 0)
    errors.log_into(None)  # no run directory named (validate has none)
    with CliRunner().isolated_filesystem():
        with open("spec.yaml", "w") as handle:
            handle.write("seed: 1\n")
        result = CliRunner().invoke(main, ["validate", "spec.yaml"])
    assert result.exit_code == 1 and "ZeroDivisionError" in result.stderr
    path = result.stderr.strip().rsplit("full traceback in ", 1)[1]
    try:
        assert "Traceback" in open(path).read()
    finally:
        os.unlink(path)


def test_predict_with_a_bad_model_file_exits_2_with_one_line(tmp_path):
    model = tmp_path / "model.onnx"
    model.write_bytes(b"\x08\x07not an onnx model at all")
    image = tmp_path / "x.npy"
    import numpy as np

    np.save(image, np.zeros((8, 8), dtype=np.uint8))
    result = CliRunner().invoke(main, ["predict", str(model), str(image)])
    assert result.exit_code == 2, result.output
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.output
