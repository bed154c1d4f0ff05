"""DICOM through pydicom: the modality rescale, MONOCHROME1 and the VOI window, decoded alike in training and
``predict``; without pydicom, one line that names the extra to install."""

from __future__ import annotations

import builtins

import numpy as np
import pytest
import torch
from compressor.export import InputError, OnnxClassifier
from compressor.export.decode import decode_file

from compressor.data import DataError, prepare_data, to_model_input
from compressor.spec import parse_spec
from tests.deploy_models import linear_model
from tests.synthetic import write_dicom


def stored_pixels(seed: int, shape=(10, 12)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 4096, size=shape)


def test_monochrome1_with_rescale_follows_the_header(tmp_path):
    stored = stored_pixels(0)
    path = write_dicom(tmp_path / "m1.dcm", stored, monochrome1=True, slope=2.0, intercept=-100.0)
    decoded = decode_file(path.read_bytes(), str(path))
    # Modality values y = 2 s - 100 over the header's range [2*0 - 100, 2*4095 - 100], inverted (MONOCHROME1).
    low, high = -100.0, 2 * 4095 - 100.0
    expected = np.rint((1.0 - ((2.0 * stored - 100.0) - low) / (high - low)) * 65535).astype(np.uint16)
    assert decoded.dtype == np.uint16 and decoded.shape == (10, 12, 1)
    np.testing.assert_array_equal(decoded[..., 0], expected)
    assert np.corrcoef(decoded[..., 0].ravel(), stored.ravel())[0, 1] < -0.99  # bright = dense: inverted


def test_voi_window_is_applied(tmp_path):
    stored = stored_pixels(1)
    path = write_dicom(tmp_path / "w.dcm", stored, window=(2000, 1000))
    decoded = decode_file(path.read_bytes(), str(path))[..., 0]
    assert (decoded[stored <= 1500] == 0).all() and (decoded[stored > 2500] == 65535).all()
    inside = (stored > 1600) & (stored < 2400)
    assert np.all(np.diff(decoded[inside][np.argsort(stored[inside])].astype(int)) >= 0)  # monotone inside


def test_a_dicom_folder_trains_on_what_predict_decodes(tmp_path):
    rng = np.random.default_rng(2)
    for label, name in enumerate(("clear", "finding")):
        (tmp_path / name).mkdir()
        for i in range(12):
            stored = rng.integers(2500, 3500, size=(12, 12))
            if label:
                stored[3:8, 3:8] = 200  # MONOCHROME1: low stored values are displayed white (dense, like bone)
            write_dicom(tmp_path / name / f"{i}.dcm", stored, monochrome1=True, slope=1.5, intercept=-20.0)
    bundle = prepare_data(parse_spec({"data": {"source": "folder", "path": str(tmp_path), "load": "stream"}}))
    assert bundle.class_names == ["clear", "finding"] and bundle.pixel_format.dtype == "uint16"
    test = bundle.test.images
    model = linear_model(tmp_path / "m.onnx", channels=1, size=12, classes=2, pixel_format=bundle.pixel_format)
    clf = OnnxClassifier(model.path)
    for k in range(len(test)):
        path = test.base.paths[int(test.index[k])]
        training = to_model_input(test[[k]], bundle.test.window, "cpu").numpy()
        np.testing.assert_array_equal(clf.preprocess(path), training)
    # After the MONOCHROME1 inversion the finding is bright in the decoded image, as it is displayed.
    pixels = torch.cat([bundle.train.images[:], bundle.test.images[:]]).numpy()[:, 0]
    labels = np.concatenate([bundle.train.labels, bundle.test.labels])
    centre = pixels[:, 4:7, 4:7].mean(axis=(1, 2))
    assert centre[labels == 1].min() > centre[labels == 0].max()


def test_without_pydicom_the_error_names_the_extra(tmp_path, monkeypatch):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    for folder in ("a", "b"):
        write_dicom(tmp_path / folder / "0.dcm", stored_pixels(3))
        write_dicom(tmp_path / folder / "1.dcm", stored_pixels(4))
    real_import = builtins.__import__

    def no_pydicom(name, *args, **kwargs):
        if name == "pydicom" or name.startswith("pydicom."):
            raise ImportError("No module named 'pydicom'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_pydicom)
    with pytest.raises(DataError) as info:
        prepare_data(parse_spec({"data": {"source": "folder", "path": str(tmp_path)}}))
    message = str(info.value)
    assert "pip install 'compressor[dicom]'" in message and "0.dcm" in message and "\n" not in message
    model = linear_model(tmp_path / "m.onnx", channels=1, size=10, classes=2)
    with pytest.raises(InputError, match=r"compressor\[dicom\]"):
        OnnxClassifier(model.path).predict(tmp_path / "a" / "0.dcm")
