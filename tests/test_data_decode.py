"""Lossless decoding: 16-bit files keep every value, one window per data set, and training, ``predict`` and ``serve``
turn one file into the same model input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from compressor.export import InputError, OnnxClassifier
from compressor.export.decode import PixelFormat
from compressor.export.preprocess import decode_image
from PIL import Image

from compressor.data import DataError, prepare_data, to_model_input
from compressor.data.file_sources import file_store
from compressor.data.stores import SubsetStore
from compressor.spec import parse_spec
from tests.deploy_models import linear_model
from tests.synthetic import above_4000_images, png_bytes, write_npz, write_png16_folder


def bundle_for(**data):
    return prepare_data(parse_spec({"data": data}))


@pytest.mark.parametrize("window", [(0.0, 65535.0), (0.0, 4095.0), (100.5, 3000.25), (-5.0, 70000.0)])
def test_window_is_bit_identical_in_torch_and_numpy(window):
    pixels = np.arange(65536, dtype=np.uint16).reshape(1, 1, 256, 256)
    fmt = PixelFormat("uint16", window)
    torch_side = to_model_input(torch.from_numpy(pixels), window, "cpu").numpy()
    np.testing.assert_array_equal(torch_side, fmt.to_unit(pixels))
    assert torch_side.min() >= 0.0 and torch_side.max() <= 1.0


def test_uint8_window_is_the_old_division_by_255():
    pixels = torch.arange(256, dtype=torch.uint8).view(1, 1, 16, 16)
    np.testing.assert_array_equal(to_model_input(pixels, None, "cpu").numpy(), pixels.float().div(255.0).numpy())


def test_16bit_png_and_tiff_keep_every_value(tmp_path):
    source = above_4000_images(np.array([0, 1, 1, 0]), size=12, seed=3)
    paths = []
    for i, image in enumerate(source):
        paths.append(tmp_path / f"{i}.{'png' if i % 2 else 'tif'}")
        Image.fromarray(image).save(paths[-1])
    store = file_store(paths, parse_spec({"data": {"source": "folder", "path": str(tmp_path)}}).data, "test")
    assert store.dtype == torch.uint16 and tuple(store.shape) == (4, 1, 12, 12)
    np.testing.assert_array_equal(store[:].numpy()[:, 0], source)
    assert store[:].numpy().max() > 4000  # nothing clipped to 8 bits (issue 15, defect 4)


def test_16bit_folder_bundle_records_its_pixel_format(tmp_path):
    root = write_png16_folder(tmp_path / "xr", per_class=10, size=12)
    bundle = bundle_for(source="folder", path=str(root), window="auto")
    assert bundle.train.images.dtype == torch.uint16 and bundle.pixel_format.dtype == "uint16"
    low, high = bundle.pixel_format.window
    pixels = bundle.train.images[:].numpy()
    assert (low, high) == (float(pixels.min()), float(pixels.max())) and high > 20000
    unit = (pixels.astype(np.float64) - low) / (high - low)
    assert bundle.mean == pytest.approx([unit.mean()], abs=1e-6)
    assert bundle.std == pytest.approx([unit.std(ddof=1)], abs=1e-6)


@pytest.mark.filterwarnings("ignore:Using `httpx` with `starlette.testclient`")
def test_training_predict_and_serve_decode_a_16bit_file_alike(tmp_path):
    from compressor.export.server import create_app
    from fastapi.testclient import TestClient

    root = write_png16_folder(tmp_path / "xr", per_class=8, size=20)
    bundle = bundle_for(source="folder", path=str(root), image_size=16, window="auto", load="stream")
    test = bundle.test.images
    assert isinstance(test, SubsetStore)
    path = test.base.paths[int(test.index[0])]
    training = to_model_input(test[[0]], bundle.test.window, "cpu").numpy()
    model = linear_model(tmp_path / "m.onnx", channels=1, size=16, classes=2, pixel_format=bundle.pixel_format)
    clf = OnnxClassifier(model.path)
    assert clf.metadata.pixel_format == bundle.pixel_format  # recorded in and read back from the ONNX metadata
    np.testing.assert_array_equal(clf.preprocess(path), training)  # predict
    data = open(path, "rb").read()
    np.testing.assert_array_equal(decode_image(data, 1, 16, "body", clf.metadata.pixel_format)[None], training)
    with TestClient(create_app(clf)) as client:  # serve, end to end: the same input gives the same probabilities
        answer = client.post("/predict", content=data, headers={"content-type": "image/png"}).json()
    expected = clf.top_k(clf.run(training), 2)[0]
    assert [p["index"] for p in answer["predictions"][0]] == [p.index for p in expected]
    assert [p["probability"] for p in answer["predictions"][0]] == [p.probability for p in expected]


def test_a_file_of_another_bit_depth_is_refused_not_rescaled(tmp_path):
    eight = linear_model(tmp_path / "u8.onnx", channels=1, size=8, classes=2)
    sixteen = linear_model(tmp_path / "u16.onnx", channels=1, size=8, classes=2,
                           pixel_format=PixelFormat("uint16", (0, 4095)))
    deep = tmp_path / "deep.png"
    Image.fromarray(np.full((8, 8), 3000, np.uint16)).save(deep)
    shallow = tmp_path / "shallow.png"
    Image.fromarray(np.full((8, 8), 200, np.uint8)).save(shallow)
    with pytest.raises(InputError, match="16-bit image, but the model was trained on 8-bit"):
        OnnxClassifier(eight.path).predict(deep)
    with pytest.raises(InputError, match="8-bit image, but the model was trained on 16-bit"):
        OnnxClassifier(sixteen.path).predict(shallow)
    x = OnnxClassifier(sixteen.path).preprocess(deep)
    assert x.max() == pytest.approx(3000 / 4095)  # through the recorded window
    arrays = OnnxClassifier(sixteen.path).preprocess(np.full((8, 8), 3000, np.uint16))
    np.testing.assert_array_equal(arrays, x)  # an integer array is raw pixels of the model's type


@pytest.mark.parametrize("channels", [3, 4, 2])
def test_16bit_colour_is_refused_everywhere(tmp_path, channels):
    image = np.random.default_rng(0).integers(0, 65536, size=(6, 6, channels))
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    for i in range(3):
        (tmp_path / "a" / f"{i}.png").write_bytes(png_bytes(image, 16))
        (tmp_path / "b" / f"{i}.png").write_bytes(png_bytes(image, 16))
    with pytest.raises(DataError, match="16-bit colour .* would lose precision"):
        bundle_for(source="folder", path=str(tmp_path))
    model = linear_model(tmp_path / "m.onnx", channels=3, size=6, classes=2)
    with pytest.raises(InputError, match="would lose precision"):
        OnnxClassifier(model.path).predict(tmp_path / "a" / "0.png")


def test_mixed_bit_depths_are_refused(tmp_path):
    root = write_png16_folder(tmp_path / "xr", per_class=4, size=8)
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(root / "negative" / "eight.png")
    with pytest.raises(DataError, match="different bit depths"):
        bundle_for(source="folder", path=str(root))


def test_uint16_npz_with_explicit_window(tmp_path):
    arrays = {}
    rng = np.random.default_rng(0)
    for split, n in (("train", 40), ("val", 10), ("test", 10)):
        labels = rng.integers(0, 2, n)
        arrays[f"{split}_images"] = (above_4000_images(labels, 8, seed=n) // 16).astype(np.uint16)  # 12-bit
        arrays[f"{split}_labels"] = labels
    np.savez(tmp_path / "x.npz", **arrays)
    bundle = bundle_for(source="npz", path=str(tmp_path / "x.npz"), window=[0, 4095])
    assert bundle.pixel_format == PixelFormat("uint16", (0.0, 4095.0))
    np.testing.assert_array_equal(bundle.train.images.numpy()[:, 0], arrays["train_images"])
    x = to_model_input(bundle.train.images, bundle.train.window, "cpu")
    assert x.max().item() == pytest.approx(arrays["train_images"].max() / 4095)
    assert bundle.mean[0] == pytest.approx(float(x.double().mean()), abs=1e-6)


def test_float_npz_needs_a_window_outside_unit_range(tmp_path):
    arrays = dict(np.load(write_npz(tmp_path / "a.npz")))
    for split in ("train", "val", "test"):
        arrays[f"{split}_images"] = arrays[f"{split}_images"].astype(np.float32) * 4.0  # 0..1020
    np.savez(tmp_path / "f.npz", **arrays)
    with pytest.raises(DataError, match="outside \\[0, 1\\]; set data.window"):
        bundle_for(source="npz", path=str(tmp_path / "f.npz"))
    bundle = bundle_for(source="npz", path=str(tmp_path / "f.npz"), window="auto")
    assert bundle.train.images.dtype == torch.float32
    low, high = bundle.pixel_format.window
    assert low == float(arrays["train_images"].min()) and high == float(arrays["train_images"].max())
    explicit = bundle_for(source="npz", path=str(tmp_path / "f.npz"), window=[0, 500])  # clips: a second pass
    x = to_model_input(explicit.train.images, explicit.train.window, "cpu").double()
    assert explicit.mean[0] == pytest.approx(float(x.mean()), abs=1e-6)
    assert explicit.std[0] == pytest.approx(float(x.std()), abs=1e-6)
    # the type window is refused for out-of-range pixels in any split, not only the training one
    arrays["train_images"] = arrays["train_images"] / 1020.0
    np.savez(tmp_path / "val_only.npz", **arrays)
    with pytest.raises(DataError, match="outside \\[0, 1\\]; set data.window"):
        bundle_for(source="npz", path=str(tmp_path / "val_only.npz"))


def test_8bit_data_keeps_its_old_statistics(tmp_path):
    bundle = bundle_for(source="digits")
    x = bundle.train.images.float().div(255.0)
    assert bundle.pixel_format == PixelFormat("uint8", (0.0, 255.0))
    assert bundle.mean == pytest.approx([float(x.mean())], abs=1e-6)
    assert bundle.std == pytest.approx([float(x.std())], abs=1e-6)
