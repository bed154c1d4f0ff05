"""Data sources, splits and their error messages."""

from __future__ import annotations

import numpy as np
import pytest

from compressor.data import DataError, prepare_data
from compressor.data.split import split_indices
from compressor.spec import parse_spec
from tests.synthetic import write_csv, write_folder, write_npz


def bundle_for(**data):
    return prepare_data(parse_spec({"data": data}))


def test_digits_builtin_split_is_stratified_and_seeded():
    bundle = bundle_for(source="digits")
    assert bundle.train.images.dtype.__str__() == "torch.uint8"
    assert tuple(bundle.train.images.shape[1:]) == (1, 8, 8)
    assert len(bundle.train) + len(bundle.val) + len(bundle.test) == 1797
    assert bundle.num_classes == 10 and bundle.task == "multiclass"
    test_share = np.bincount(bundle.test.labels, minlength=10) / len(bundle.test)
    assert np.abs(test_share - 0.1).max() < 0.02  # stratified
    again = bundle_for(source="digits")
    assert np.array_equal(again.test.labels, bundle.test.labels)


def test_split_indices_partition_every_sample():
    labels = np.repeat(np.arange(5), 40)
    parts = split_indices(labels, 0.1, 0.2, seed=3)
    joined = np.concatenate(list(parts.values()))
    assert sorted(joined.tolist()) == list(range(200))
    assert len(parts["test"]) == 40 and len(parts["val"]) == 20


@pytest.mark.parametrize("channels", [1, 3])
def test_npz_grayscale_and_rgb(tmp_path, channels):
    path = write_npz(tmp_path / "d.npz", channels=channels, image_size=10)
    bundle = bundle_for(source="npz", path=str(path))
    assert tuple(bundle.train.images.shape[1:]) == (channels, 10, 10)
    assert (len(bundle.train), len(bundle.val), len(bundle.test)) == (120, 40, 40)
    assert len(bundle.mean) == channels


def test_npz_binary_and_resize_and_channel_conversion(tmp_path):
    path = write_npz(tmp_path / "b.npz", num_classes=2, channels=3)
    bundle = bundle_for(source="npz", path=str(path), image_size=16, channels=1)
    assert bundle.num_classes == 2 and tuple(bundle.test.images.shape[1:]) == (1, 16, 16)


def test_npz_multilabel(tmp_path):
    path = write_npz(tmp_path / "m.npz", multilabel=5)
    bundle = bundle_for(source="npz", path=str(path))
    assert bundle.task == "multilabel" and bundle.num_classes == 5
    assert bundle.train.labels.shape == (120, 5) and bundle.train.labels.dtype == np.float32
    with pytest.raises(DataError, match="multi-label"):
        bundle_for(source="npz", path=str(path), task="multiclass")


def test_npz_groups_are_read(tmp_path):
    path = write_npz(tmp_path / "g.npz", groups=True)
    bundle = bundle_for(source="npz", path=str(path))
    assert bundle.num_groups == 2 and bundle.train.groups.shape == (120,)


def test_npz_missing_keys_names_them(tmp_path):
    path = write_npz(tmp_path / "x.npz", drop_keys=("val_labels", "test_images"))
    with pytest.raises(DataError) as info:
        bundle_for(source="npz", path=str(path))
    assert "missing keys" in str(info.value) and "val_labels" in str(info.value) and "test_images" in str(info.value)


def test_npz_label_count_mismatch(tmp_path):
    arrays = dict(np.load(write_npz(tmp_path / "a.npz")))
    arrays["train_labels"] = arrays["train_labels"][:-3]
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(DataError, match="117 labels for 120 images"):
        bundle_for(source="npz", path=str(tmp_path / "bad.npz"))


def test_missing_and_corrupt_files(tmp_path):
    with pytest.raises(DataError, match="not found"):
        bundle_for(source="npz", path=str(tmp_path / "nope.npz"))
    (tmp_path / "junk.npz").write_bytes(b"not a zip file")
    with pytest.raises(DataError, match="not a readable .npz"):
        bundle_for(source="npz", path=str(tmp_path / "junk.npz"))
    with pytest.raises(DataError, match="image folder not found"):
        bundle_for(source="folder", path=str(tmp_path / "nothing"))


def test_image_folder(tmp_path):
    root = write_folder(tmp_path / "imgs", num_classes=3, per_class=20, rgb=True)
    bundle = bundle_for(source="folder", path=str(root), val_fraction=0.1, test_fraction=0.25)
    assert bundle.class_names == ["class_0", "class_1", "class_2"]
    assert tuple(bundle.train.images.shape[1:]) == (3, 12, 12)
    assert len(bundle.train) + len(bundle.val) + len(bundle.test) == 60


def test_image_folder_unreadable_image_is_named(tmp_path):
    root = write_folder(tmp_path / "imgs", num_classes=2, per_class=5)
    (root / "class_1" / "broken.png").write_bytes(b"\x89PNG garbage")
    with pytest.raises(DataError, match="broken.png: not a decodable image"):
        bundle_for(source="folder", path=str(root))


def test_csv_manifest_single_and_multilabel_with_groups(tmp_path):
    manifest = write_csv(tmp_path / "single", groups=True)
    bundle = bundle_for(source="csv", path=str(manifest))
    assert bundle.task == "multiclass" and bundle.class_names == ["l0", "l1", "l2"] and bundle.num_groups == 2
    multi = write_csv(tmp_path / "multi", multilabel=True)
    mb = bundle_for(source="csv", path=str(multi))
    assert mb.task == "multilabel" and mb.train.labels.shape[1] == 3
    assert (mb.train.labels.sum(1) >= 1).all()


def test_csv_errors(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("file,target\na.png,1\n")
    with pytest.raises(DataError, match="'path' and 'label'"):
        bundle_for(source="csv", path=str(bad))
    missing = tmp_path / "missing.csv"
    missing.write_text("path,label\nnope.png,a\nnope2.png,b\n")
    with pytest.raises(DataError, match="nope.png"):
        bundle_for(source="csv", path=str(missing))
