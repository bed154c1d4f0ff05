"""Bad data files are refused where they are read, with one line naming the file and key (issue 15's data defects),
and ``compressor run`` stops on them before training."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from compressor.cli import main
from compressor.data import DataError, prepare_data
from compressor.spec import parse_spec
from tests.synthetic import write_csv, write_folder, write_npz


def bundle_for(**data):
    return prepare_data(parse_spec({"data": data}))


def refused(pattern: str, **data) -> str:
    """The one-line message ``prepare_data`` refuses ``data`` with; it must match ``pattern``."""
    with pytest.raises(DataError, match=pattern) as info:
        bundle_for(**data)
    assert "\n" not in str(info.value)
    return str(info.value)


def npz_with(tmp_path, name="bad.npz", **changes) -> str:
    arrays = dict(np.load(write_npz(tmp_path / "good.npz")))
    arrays.update(changes)
    for key in [k for k, v in changes.items() if v is None]:
        arrays.pop(key)
    np.savez(tmp_path / name, **arrays)
    return str(tmp_path / name)


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_one_non_finite_pixel_is_named_not_averaged_in(tmp_path, value):  # defect 3
    floats = {k: v.astype(np.float32) / 255.0 for k, v in np.load(write_npz(tmp_path / "good.npz")).items()
              if k.endswith("_images")}
    floats["val_images"][7, 2, 3] = value
    path = npz_with(tmp_path, **floats)
    message = refused("NaN or infinite", source="npz", path=path)
    assert "bad.npz:val_images[7]" in message


def test_a_huge_label_does_not_size_the_model(tmp_path):  # defect 5
    labels = np.load(write_npz(tmp_path / "good.npz"))["train_labels"].astype(np.int64)
    labels[5] = 1_000_000
    path = npz_with(tmp_path, train_labels=labels)
    assert "bad.npz:train_labels[5]: label 1000000 would make 1000001 classes" in refused("more than 10000",
                                                                                         source="npz", path=path)
    names = np.array(["a", "b", "c", "d"])
    path = npz_with(tmp_path, "named.npz", train_labels=labels, class_names=names)
    refused("label 1000000 is outside the 4 classes named by class_names", source="npz", path=path)


def test_class_names_from_the_npz_size_the_task(tmp_path):
    path = npz_with(tmp_path, "named.npz", class_names=np.array(["cyst", "edema", "mass", "normal", "unused"]))
    bundle = bundle_for(source="npz", path=path)
    assert bundle.class_names == ["cyst", "edema", "mass", "normal", "unused"] and bundle.num_classes == 5
    refused("class_names: class name 'a' appears twice", source="npz",
            path=npz_with(tmp_path, "twice.npz", class_names=np.array(["a", "a", "b", "c"])))


def test_a_class_only_in_test_is_refused(tmp_path):
    labels = np.load(write_npz(tmp_path / "good.npz"))["test_labels"].astype(np.int64)
    labels[3] = 4  # the training labels are 0..3
    message = refused("class 4 appears in test but never in train", source="npz",
                      path=npz_with(tmp_path, test_labels=labels))
    assert "test_labels[3]" in message


def test_damaged_npz_files(tmp_path):  # defect 7
    good = write_npz(tmp_path / "good.npz")
    data = bytearray(good.read_bytes())
    data[len(data) // 3] ^= 0xFF  # a flipped byte inside a member
    (tmp_path / "crc.npz").write_bytes(bytes(data))
    refused("damaged .npz member", source="npz", path=str(tmp_path / "crc.npz"))
    np.savez_compressed(tmp_path / "z.npz", **dict(np.load(good)))
    data = bytearray((tmp_path / "z.npz").read_bytes())
    data[len(data) // 3] ^= 0xFF
    (tmp_path / "zcrc.npz").write_bytes(bytes(data))
    refused("damaged .npz member|not a readable", source="npz", path=str(tmp_path / "zcrc.npz"))
    (tmp_path / "empty.npz").write_bytes(b"")
    refused("empty.npz: not a readable .npz file", source="npz", path=str(tmp_path / "empty.npz"))
    np.savez(tmp_path / "nothing.npz")
    refused("nothing.npz: missing keys", source="npz", path=str(tmp_path / "nothing.npz"))
    (tmp_path / "short.npz").write_bytes(good.read_bytes()[:3000])
    refused("short.npz: not a readable .npz file", source="npz", path=str(tmp_path / "short.npz"))


def test_object_and_string_arrays(tmp_path):
    objects = np.empty(120, dtype=object)
    objects[:] = [np.zeros((2, 2))] * 120
    refused("train_images: an object array", source="npz", path=npz_with(tmp_path, train_images=objects))
    refused("train_images: <U1 values; images, labels and groups must be numbers", source="npz",
            path=npz_with(tmp_path, "s.npz", train_images=np.array(["a"] * 120)))
    refused("val_labels: labels must be numbers|val_labels: <U1 values", source="npz",
            path=npz_with(tmp_path, "l.npz", val_labels=np.array(["x"] * 40)))


def test_images_below_the_models_minimum_size(tmp_path):
    tiny = {f"{s}_images": np.zeros((n, 1, 1), np.uint8) for s, n in (("train", 120), ("val", 40), ("test", 40))}
    path = npz_with(tmp_path, **tiny)
    refused("images are 1x1 pixels; the models need at least 4x4", source="npz", path=path)
    bundle = bundle_for(source="npz", path=path, image_size=4)  # asked for explicitly: resized
    assert tuple(bundle.train.images.shape[1:]) == (1, 4, 4)


def test_non_square_images_are_not_recorded_square(tmp_path):  # defect 13
    rng = np.random.default_rng(0)
    wide = {f"{s}_images": rng.integers(0, 256, (n, 8, 10)).astype(np.uint8)
            for s, n in (("train", 120), ("val", 40), ("test", 40))}
    path = npz_with(tmp_path, **wide)
    refused("images are 8x10 \\(height x width\\); set data.image_size", source="npz", path=path)
    bundle = bundle_for(source="npz", path=path, image_size=12)
    assert bundle.image_shape == (1, 12, 12)
    root = write_folder(tmp_path / "f", num_classes=2, per_class=4)
    Image.fromarray(np.zeros((12, 9), np.uint8)).save(root / "class_0" / "odd.png")
    refused("images of different sizes", source="folder", path=str(root))


def test_mismatched_lengths_and_empty_splits(tmp_path):
    refused("117 labels for 120 images", source="npz",
            path=npz_with(tmp_path, train_labels=np.zeros((117, 1), np.uint8)))
    refused("train_groups.*for 120 images", source="npz", path=npz_with(tmp_path, "g.npz", train_groups=np.zeros(3)))
    refused("train_groups\\[1\\]: group -1", source="npz",
            path=npz_with(tmp_path, "n.npz", train_groups=np.r_[0, -1, np.zeros(118)]))
    empty = {"train_images": np.zeros((0, 12, 12), np.uint8), "train_labels": np.zeros((0, 1), np.uint8)}
    refused("the train split is empty", source="npz", path=npz_with(tmp_path, "e.npz", **empty))


def test_bad_csv_manifests(tmp_path):  # defect 7
    manifest = write_csv(tmp_path / "c", groups=True)
    lines = manifest.read_text().splitlines()
    short = tmp_path / "c" / "short.csv"
    short.write_text("\n".join([*lines[:3], lines[3].rsplit(",", 1)[0], *lines[4:]]) + "\n")
    refused("short.csv: line 4 has 2 fields; the header has 3", source="csv", path=str(short))
    nogroup = tmp_path / "c" / "nogroup.csv"
    nogroup.write_text("\n".join([*lines[:2], lines[2].rsplit(",", 1)[0] + ",", *lines[3:]]) + "\n")
    refused("nogroup.csv: line 3 has no group value", source="csv", path=str(nogroup))
    latin = tmp_path / "c" / "latin.csv"
    latin.write_bytes(("\n".join(lines[:3]) + "\nimages/c0_3.png,caf\u00e9,a\n").encode("latin-1"))
    refused("latin.csv: not UTF-8 text", source="csv", path=str(latin))
    binary = tmp_path / "c" / "binary.csv"
    binary.write_bytes(bytes(range(256)) * 4)
    refused("binary.csv: (not UTF-8 text|a binary file)", source="csv", path=str(binary))
    refused("is a folder; data.path of a csv source must be the CSV manifest", source="csv", path=str(tmp_path))
    nul = tmp_path / "c" / "nul.csv"
    nul.write_text("path,label\nimages/c0_0.png,l0\x00\n")
    refused("nul.csv: a binary file", source="csv", path=str(nul))


def test_wrong_kind_of_path(tmp_path):
    (tmp_path / "file.bin").write_bytes(b"\x00\x01\x02")
    refused("file.bin: is a file; data.path of a folder source must be a folder", source="folder",
            path=str(tmp_path / "file.bin"))
    refused("file.bin: not a readable .npz file", source="npz", path=str(tmp_path / "file.bin"))
    (tmp_path / "dir").mkdir()
    refused("dir: missing keys .* folder of .npy files", source="npz", path=str(tmp_path / "dir"))


def test_compressor_run_stops_on_bad_data_with_one_line(tmp_path):
    (tmp_path / "empty.npz").write_bytes(b"")
    spec = tmp_path / "spec.yaml"
    spec.write_text(f"data:\n  source: npz\n  path: {tmp_path / 'empty.npz'}\n")
    result = CliRunner().invoke(main, ["run", str(spec), "--out", str(tmp_path / "run")])
    assert result.exit_code == 2 and "Traceback" not in result.output and "Aborted" not in result.output
    assert "empty.npz: not a readable .npz file" in result.output
    # the stage headings ("> data") are progress; the failure itself is one line
    lines = [line for line in result.output.splitlines() if line.strip() and not line.startswith("> ")]
    assert len(lines) == 1 and lines[0].startswith("error:"), result.output


def test_spec_refuses_what_the_data_layer_would_ignore_or_misread():
    from compressor.spec import SpecError

    for data, message in (({"source": "digits", "path": "x.npz"}, "data.path is not used by source 'digits'"),
                          ({"source": "digits", "window": [5, 5]}, "low < high"),
                          ({"source": "digits", "class_names": ["a", "a"]}, "distinct")):
        with pytest.raises(SpecError) as info:
            parse_spec({"data": data})
        assert any(message in m for m in info.value.messages), info.value.messages
