"""OnnxClassifier: metadata, preprocessing of every accepted input kind, probabilities against a numpy reference,
clear errors for bad input, and the ``compressor predict`` command."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner
from compressor.export import InputError, OnnxClassifier
from compressor.export.runtime import default_providers, probabilities
from PIL import Image

from compressor.cli import main
from tests.deploy_models import linear_model


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


@pytest.fixture(scope="module")
def gray(tmp_path_factory):
    return linear_model(tmp_path_factory.mktemp("gray") / "gray.onnx", channels=1, size=8, classes=4)


@pytest.fixture(scope="module")
def rgb(tmp_path_factory):
    return linear_model(tmp_path_factory.mktemp("rgb") / "rgb.onnx", channels=3, size=6, classes=5, seed=1)


def images(n: int, size: int, channels: int, seed: int = 0) -> np.ndarray:
    """``uint8 [N, H, W, C]`` random images."""
    return np.random.default_rng(seed).integers(0, 256, size=(n, size, size, channels), dtype=np.uint8)


def test_metadata_is_read(gray):
    clf = OnnxClassifier(gray.path)
    assert clf.class_names == gray.class_names
    assert clf.input_shape == (1, 8, 8)
    assert clf.metadata.task == "multiclass" and clf.metadata.precision == "fp32"
    assert clf.metadata.as_json()["normalization_mean"] == pytest.approx(gray.mean.tolist())
    assert clf.providers == ["CPUExecutionProvider"]  # no CUDA provider in this environment


def test_probabilities_match_numpy_reference(gray):
    clf = OnnxClassifier(gray.path)
    batch = images(7, 8, 1)
    x = batch.transpose(0, 3, 1, 2).astype(np.float32) / 255.0
    expected = softmax(gray.logits(x))
    np.testing.assert_allclose(clf.probabilities(batch), expected, atol=1e-5)
    predictions = clf.predict(batch, top_k=3)
    assert len(predictions) == 7 and all(len(row) == 3 for row in predictions)
    for row, probs in zip(predictions, expected, strict=True):
        order = np.argsort(-probs)[:3]
        assert [p.index for p in row] == order.tolist()
        assert [p.label for p in row] == [gray.class_names[i] for i in order]
        assert [p.probability for p in row] == pytest.approx(probs[order].tolist(), abs=1e-5)
    full = clf.predict(batch[:1], top_k=99)[0]  # capped at the number of classes; softmax sums to one
    assert len(full) == 4 and sum(p.probability for p in full) == pytest.approx(1.0, abs=1e-9)


def test_every_input_kind_gives_the_same_input(gray, tmp_path):
    clf = OnnxClassifier(gray.path)
    image = images(1, 8, 1)[0]  # H x W x 1
    png = tmp_path / "x.png"
    Image.fromarray(image[..., 0]).save(png)
    reference = image[..., 0].astype(np.float32)[None, None] / 255.0
    kinds = {
        "path": png, "str path": str(png), "bytes": png.read_bytes(), "PIL": Image.open(png),
        "HxW uint8": image[..., 0], "HxWx1 uint8": image, "CxHxW uint8": image.transpose(2, 0, 1),
        "HxW float": image[..., 0].astype(np.float64) / 255.0, "NCHW uint8": image.transpose(2, 0, 1)[None],
        "NHWC uint8": image[None], "HxW int64": image[..., 0].astype(np.int64),
    }
    for name, value in kinds.items():
        np.testing.assert_allclose(clf.preprocess(value), reference, atol=1e-7, err_msg=name)
    batch = clf.preprocess([png, image[..., 0], image.transpose(2, 0, 1)[None]])
    assert batch.shape == (3, 1, 8, 8) and np.allclose(batch, reference)


def test_channel_conversion_and_resize_follow_pillow(gray, rgb, tmp_path):
    colour = images(1, 16, 3, seed=3)[0]
    png = tmp_path / "colour.png"
    Image.fromarray(colour).save(png)
    # Grayscale model: RGB converted to luma and resized bilinearly by Pillow, as the training pipeline reads files.
    expected = np.asarray(Image.fromarray(colour).convert("L").resize((8, 8), Image.BILINEAR), np.float32) / 255.0
    gray_clf = OnnxClassifier(gray.path)
    np.testing.assert_allclose(gray_clf.preprocess(png)[0, 0], expected, atol=1e-7)
    np.testing.assert_allclose(gray_clf.preprocess(colour)[0, 0], expected, atol=1e-7)  # array == its PNG
    # RGB model: grayscale replicated to three channels, alpha dropped.
    rgb_clf = OnnxClassifier(rgb.path)
    plane = images(1, 6, 1, seed=4)[0]
    out = rgb_clf.preprocess(plane[..., 0])
    assert out.shape == (1, 3, 6, 6) and all(np.allclose(out[0, c], plane[..., 0] / 255.0) for c in range(3))
    rgba = np.concatenate([images(1, 6, 3, seed=5)[0], np.full((6, 6, 1), 7, np.uint8)], axis=-1)
    np.testing.assert_allclose(rgb_clf.preprocess(rgba)[0], rgba[..., :3].transpose(2, 0, 1) / 255.0, atol=1e-7)
    # Float arrays of another size are resized per channel and stay in [0, 1].
    resized = rgb_clf.preprocess(np.random.default_rng(0).random((9, 11, 3)))
    assert resized.shape == (1, 3, 6, 6) and resized.min() >= 0.0 and resized.max() <= 1.0


def test_multilabel_uses_sigmoid(tmp_path):
    model = linear_model(tmp_path / "ml.onnx", classes=3, task="multilabel", seed=2)
    clf = OnnxClassifier(model.path)
    batch = images(5, 8, 1)
    x = batch.transpose(0, 3, 1, 2).astype(np.float32) / 255.0
    expected = 1.0 / (1.0 + np.exp(-model.logits(x)))
    np.testing.assert_allclose(clf.probabilities(batch), expected, atol=1e-5)
    assert not np.allclose(expected.sum(axis=1), 1.0)
    assert probabilities(np.array([[-800.0, 800.0]]), "multilabel").tolist() == [[0.0, 1.0]]  # no overflow


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (np.full((8, 8), 1.5), "must lie in \\[0, 1\\]"),
        (np.full((8, 8), np.nan), "NaN"),
        (np.zeros((8, 8), dtype=bool), "unsupported dtype"),
        (np.zeros((8, 8), dtype="timedelta64[s]"), "unsupported dtype"),
        (np.zeros((8, 8), dtype=np.complex64), "unsupported dtype"),
        (np.full((8, 8), 300, dtype=np.int32), "0..255"),
        (np.zeros((2, 2, 8, 8, 1), np.uint8), "cannot read an image of shape"),
        (np.zeros((8, 8, 7), np.uint8), "cannot read an image of shape"),
        (np.zeros((0, 1, 8, 8), np.uint8), "empty batch"),
        (b"definitely not a png", "not a decodable image"),
        (b"", "empty image data"),
        ([], "no images"),
        (3.5, "unsupported input type"),
    ],
)
def test_bad_inputs_raise_input_error(gray, value, message):
    with pytest.raises(InputError, match=message):
        OnnxClassifier(gray.path).predict(value)


def test_missing_file_and_foreign_model(gray, tmp_path):
    with pytest.raises(InputError, match="file not found"):
        OnnxClassifier(gray.path).predict(tmp_path / "missing.png")
    plain = linear_model(tmp_path / "plain.onnx", metadata=False)
    with pytest.raises(ValueError, match="not a compressor ONNX export .*class_names"):
        OnnxClassifier(plain.path)
    (tmp_path / "garbage.onnx").write_bytes(b"\x00\x01garbage")
    with pytest.raises(ValueError, match="onnxruntime cannot load"):
        OnnxClassifier(tmp_path / "garbage.onnx")


def test_cuda_provider_preferred_when_available(monkeypatch):
    import onnxruntime as ort

    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    assert default_providers() == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CPUExecutionProvider"])
    assert default_providers() == ["CPUExecutionProvider"]


def test_runtime_import_needs_no_torch():
    code = "import sys; from compressor.export import OnnxClassifier; assert 'torch' not in sys.modules"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True).returncode == 0


def test_predict_command(gray, tmp_path):
    clf = OnnxClassifier(gray.path)
    folder = tmp_path / "imgs"
    folder.mkdir()
    batch = images(3, 8, 1, seed=9)
    for i, image in enumerate(batch):
        Image.fromarray(image[..., 0]).save(folder / f"{i}.png")
    np.save(tmp_path / "nchw.npy", batch[:2].transpose(0, 3, 1, 2))
    runner = CliRunner()
    result = runner.invoke(main, ["predict", str(gray.path), str(folder), str(tmp_path / "nchw.npy"), "--top-k", "2",
                                  "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert [r["input"] for r in out["results"]] == [str(folder / f"{i}.png") for i in range(3)] + [
        f"{tmp_path / 'nchw.npy'}[{i}]" for i in range(2)]
    expected = clf.predict(list(batch[..., 0]) + list(batch[:2, ..., 0]), top_k=2)
    for row, want in zip(out["results"], expected, strict=True):
        assert [p["label"] for p in row["predictions"]] == [p.label for p in want]
        assert [p["probability"] for p in row["predictions"]] == pytest.approx([p.probability for p in want])
    table = runner.invoke(main, ["predict", str(gray.path), str(folder / "0.png")])
    assert table.exit_code == 0 and expected[0][0].label in table.output and "top 3" in table.output
    (tmp_path / "notes.png").write_text("not an image")
    bad = runner.invoke(main, ["predict", str(gray.path), str(tmp_path / "notes.png"), str(folder / "1.png")])
    assert bad.exit_code == 2 and "not a decodable image" in bad.output and "Traceback" not in bad.output
    assert bad.output.count("error:") == 1  # one line, for the one bad input; the two good ones were classified
    (tmp_path / "model.onnx").write_bytes(b"not a model")
    foreign = runner.invoke(main, ["predict", str(tmp_path / "model.onnx"), str(folder / "1.png")])
    assert foreign.exit_code == 2 and "onnxruntime cannot load this model" in foreign.output
    assert "Traceback" not in foreign.output and foreign.output.count("error:") == 1
