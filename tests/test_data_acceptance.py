"""Issue 12's real-data acceptance, small: 16-bit X-ray-like PNGs whose classes differ only above pixel value 4000,
and a MONOCHROME1 DICOM set with a rescale, each trained end to end (streamed from disk) and classified by
``compressor predict`` on the exported model."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from compressor.cli import main
from compressor.io import read_json
from compressor.pipeline import run_pipeline
from compressor.spec import parse_spec
from tests.synthetic import above_4000_images, fast_spec, write_dicom, write_png16_folder

pytestmark = pytest.mark.slow

TRAINING = {"epochs": 4, "batch_size": 32, "optimizer": {"name": "sgd", "lr": 0.05}, "schedule": {"name": "constant"}}


def train_and_predict(tmp_path, data: dict, held_out: dict[str, int]) -> tuple[dict, float]:
    """Run the pipeline on ``data`` and ``compressor predict`` the held-out files (path -> true class index)."""
    spec = parse_spec(fast_spec(data=data, teachers={"training": TRAINING},
                                distillation={"training": TRAINING}))
    run_dir = tmp_path / "run"
    run_pipeline(spec, run_dir)
    metrics = read_json(run_dir / "metrics.json")
    paths = sorted(held_out)
    result = CliRunner().invoke(main, ["predict", str(run_dir / "student.onnx"), *paths, "--top-k", "1", "--json"])
    assert result.exit_code == 0, result.output
    answers = {r["input"]: r["predictions"][0]["index"] for r in json.loads(result.stdout)["results"]}
    return metrics, float(np.mean([answers[p] == held_out[p] for p in paths]))


def test_16bit_pngs_that_differ_above_4000_train_and_predict(tmp_path):
    root = write_png16_folder(tmp_path / "xr", per_class=80, size=16)
    held = write_png16_folder(tmp_path / "held", per_class=20, size=16, seed=7)
    truth = {str(p): int(p.parent.name == "positive") for p in held.rglob("*.png")}
    metrics, predicted = train_and_predict(tmp_path, {"source": "folder", "path": str(root), "load": "stream"}, truth)
    summary = read_json(tmp_path / "run" / "data" / "summary.json")
    assert summary["pixels"] == {"dtype": "uint16", "window": [0.0, 65535.0]} and summary["image"] == [1, 16, 16]
    assert summary["classes"] == ["negative", "positive"]
    assert metrics["test"]["student"]["accuracy"] >= 0.95
    assert predicted >= 0.95


def test_monochrome1_dicom_with_rescale_trains_and_predicts(tmp_path):
    rng = np.random.default_rng(0)

    def write(root, count, seed):
        truth = {}
        for label, name in enumerate(("clear", "finding")):
            (root / name).mkdir(parents=True, exist_ok=True)
            for i in range(count):
                stored = rng.integers(2500, 4096, size=(16, 16))
                if label:
                    row, col = rng.integers(0, 11, size=2)
                    stored[row : row + 5, col : col + 5] = rng.integers(0, 400, size=(5, 5))  # displayed white
                path = write_dicom(root / name / f"{seed}_{i}.dcm", stored, monochrome1=True, slope=0.5,
                                   intercept=-1024.0)
                truth[str(path)] = label
        return truth

    write(tmp_path / "dcm", 60, 0)
    held = write(tmp_path / "held", 15, 1)
    metrics, predicted = train_and_predict(tmp_path, {"source": "folder", "path": str(tmp_path / "dcm"),
                                                      "window": "auto"}, held)
    assert read_json(tmp_path / "run" / "data" / "summary.json")["pixels"]["dtype"] == "uint16"
    assert metrics["test"]["student"]["accuracy"] >= 0.95
    assert predicted >= 0.95


def test_a_12bit_window_is_used_in_training_and_in_predict(tmp_path):
    def write(root, per_class, seed):
        truth = {}
        for label in (0, 1):
            (root / str(label)).mkdir(parents=True)
            for i, image in enumerate(above_4000_images(np.full(per_class, label), 16, seed + label) // 16):
                Image.fromarray(image.astype(np.uint16)).save(root / str(label) / f"{i}.png")  # 12-bit content
                truth[str(root / str(label) / f"{i}.png")] = label
        return truth

    write(tmp_path / "xr", 80, 0)
    held = write(tmp_path / "held", 20, 5)
    metrics, predicted = train_and_predict(tmp_path, {"source": "folder", "path": str(tmp_path / "xr"),
                                                      "window": [0, 4095]}, held)
    summary = read_json(tmp_path / "run" / "data" / "summary.json")
    assert summary["pixels"] == {"dtype": "uint16", "window": [0.0, 4095.0]}
    assert metrics["test"]["student"]["accuracy"] >= 0.95
    assert predicted >= 0.95  # the exported model sees what training saw: pixels / 4095, not / 65535
