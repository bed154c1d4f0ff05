"""Property-based fuzzing of the npz, folder and CSV loaders (Hypothesis): random small, often corrupted files either
load or raise a one-line ``DataError`` -- never another exception, never a hang.

Derandomised (the same examples on every run) and bounded: a few seconds each on two cores.
"""

from __future__ import annotations

import io
import signal
import tempfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from compressor.data import DataBundle, DataError, prepare_data
from compressor.spec import parse_spec
from tests.synthetic import png_bytes

FUZZ = settings(max_examples=60, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
HANG_SECONDS = 20


class Hang(Exception):
    """The loader ran past ``HANG_SECONDS``."""


@contextmanager
def no_hang():
    def alarm(signum, frame):
        raise Hang(f"the loader ran past {HANG_SECONDS} s")

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(HANG_SECONDS)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def loads_or_refuses(data: dict) -> None:
    """The property: a bundle, or a ``DataError`` with one line of text (anything else fails the test)."""
    with no_hang():
        try:
            bundle = prepare_data(parse_spec({"data": data}))
        except DataError as exc:
            message = str(exc)
            assert message and "\n" not in message, message
            return
    assert isinstance(bundle, DataBundle) and len(bundle.train) > 0 and len(bundle.test) > 0
    assert bundle.train.images[:1].shape[1:] == bundle.test.images[:1].shape[1:]


def corrupt(data: bytes, how: str, where: float, byte: int) -> bytes:
    """Flip one byte, cut the file short or append garbage, at a relative position ``where``."""
    if not data or how == "none":
        return data
    at = min(int(where * len(data)), len(data) - 1)
    if how == "flip":
        return data[:at] + bytes([data[at] ^ (byte or 1)]) + data[at + 1 :]
    if how == "truncate":
        return data[:at]
    return data + bytes([byte]) * 17


corruptions = st.tuples(st.sampled_from(["none", "none", "flip", "truncate", "append"]),
                        st.floats(0.0, 1.0), st.integers(0, 255))

IMAGE_DTYPES = ["uint8", "uint8", "uint16", "float32", "int64", "int8", "float64", "bool"]
NPZ_MUTATIONS = ["drop a key", "nan pixel", "negative pixel", "count mismatch", "huge label", "negative label",
                 "float label", "wide labels", "bad groups", "empty split", "class names", "odd shape", "string images"]


@st.composite
def npz_arrays(draw) -> dict[str, np.ndarray]:
    """A valid MedMNIST-layout data set of a random pixel type, then zero to three random mutations."""
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    dtype = draw(st.sampled_from(IMAGE_DTYPES))
    side = draw(st.sampled_from([4, 5, 6, 1, 3]))
    channel_axis = draw(st.sampled_from([(), (), (1,), (3,), (4,)]))
    top = {"uint8": 255, "uint16": 65535, "float32": 1.0, "float64": 1.0}.get(dtype, 100)
    arrays = {}
    for split, n in (("train", draw(st.integers(2, 8))), ("val", draw(st.integers(0, 4))),
                     ("test", draw(st.integers(1, 4)))):
        values = rng.uniform(0, top, size=(n, side, side, *channel_axis))
        arrays[f"{split}_images"] = values.astype(dtype)
        arrays[f"{split}_labels"] = rng.integers(0, 2, size=(n, 1))
    arrays["train_labels"][:2, 0] = [0, 1]  # both classes in train
    for mutation in draw(st.lists(st.sampled_from(NPZ_MUTATIONS), max_size=3)):
        split = draw(st.sampled_from(["train", "val", "test"]))
        images, labels = f"{split}_images", f"{split}_labels"
        if mutation == "drop a key":
            arrays.pop(draw(st.sampled_from(sorted(arrays))))
        elif images not in arrays or labels not in arrays or not len(arrays[images]):
            continue
        elif mutation == "nan pixel" and arrays[images].dtype.kind == "f":
            arrays[images].flat[draw(st.integers(0, arrays[images].size - 1))] = draw(st.sampled_from([np.nan,
                                                                                                        np.inf]))
        elif mutation == "negative pixel" and arrays[images].dtype.kind in "if":
            arrays[images].flat[0] = -3
        elif mutation == "count mismatch":
            arrays[labels] = arrays[labels][:-1]
        elif mutation == "huge label":
            arrays[labels][0, 0] = draw(st.sampled_from([2, 9, 10_000, 1_000_000]))
        elif mutation == "negative label":
            arrays[labels][0, 0] = -1
        elif mutation == "float label":
            arrays[labels] = arrays[labels] + draw(st.sampled_from([0.0, 0.5, np.nan]))
        elif mutation == "wide labels":
            arrays[labels] = np.repeat(arrays[labels], draw(st.integers(2, 3)), axis=1)
        elif mutation == "bad groups":
            arrays[f"{split}_groups"] = rng.integers(-1, 3, size=len(arrays[images]) + draw(st.integers(-1, 1)))
        elif mutation == "empty split":
            arrays[images], arrays[labels] = arrays[images][:0], arrays[labels][:0]
        elif mutation == "class names":
            arrays["class_names"] = np.array(draw(st.lists(st.sampled_from(["a", "b", "", "c", "a"]), max_size=4)))
        elif mutation == "odd shape":
            arrays[images] = arrays[images].reshape(len(arrays[images]), -1)
        elif mutation == "string images":
            arrays[images] = np.array(["x"] * len(arrays[images]))
    return arrays


@FUZZ
@given(arrays=npz_arrays(), compressed=st.booleans(), damage=corruptions, window=st.sampled_from(["type", "auto"]),
       size=st.sampled_from([None, 4]))
def test_npz_loader_loads_or_refuses(arrays, compressed, damage, window, size):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "d.npz"
        buffer = io.BytesIO()
        (np.savez_compressed if compressed else np.savez)(buffer, **arrays)
        path.write_bytes(corrupt(buffer.getvalue(), *damage))
        loads_or_refuses({"source": "npz", "path": str(path), "window": window, "image_size": size})


def image_file(kind: str, side: int, seed: int) -> tuple[str, bytes]:
    """One file of ``kind``: a valid image in some mode, a 16-bit colour PNG, or junk; (suffix, bytes)."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, size=(side, side, 3)).astype(np.uint8)
    out = io.BytesIO()
    if kind == "junk":
        return ".png", rng.integers(0, 256, size=side * 7).astype(np.uint8).tobytes()
    if kind == "png16rgb":
        return ".png", png_bytes(pixels.astype(np.uint16) * 257, 16)
    if kind == "I;16":
        Image.fromarray(pixels[..., 0].astype(np.uint16) * 200).save(out, "PNG")
    elif kind == "F":
        Image.fromarray(pixels[..., 0].astype(np.float32)).save(out, "TIFF")
        return ".tif", out.getvalue()
    elif kind == "jpeg":
        Image.fromarray(pixels).save(out, "JPEG")
        return ".jpg", out.getvalue()
    else:
        Image.fromarray(pixels).convert(kind).save(out, "PNG")
    return ".png", out.getvalue()


KINDS = ["L", "RGB", "RGBA", "P", "LA", "1", "I;16", "jpeg", "F", "junk", "png16rgb"]
files = st.lists(st.tuples(st.sampled_from(KINDS), st.sampled_from([6, 6, 6, 1, 9]), st.integers(0, 999),
                           corruptions), min_size=0, max_size=5)


@st.composite
def folder_classes(draw) -> list[list[tuple]]:
    """Class folders of mostly valid images of one mode and size, with random odd files mixed in."""
    common = draw(st.sampled_from(["L", "RGB", "I;16", "P", "jpeg"]))
    classes = []
    for _ in range(draw(st.integers(0, 3))):
        entries = [(common, 6, draw(st.integers(0, 999)), ("none", 0.0, 0)) for _ in range(draw(st.integers(1, 4)))]
        if draw(st.integers(0, 2)) == 0:
            entries += draw(files)
        classes.append(entries)
    return classes


@FUZZ
@given(classes=folder_classes(), size=st.sampled_from([None, 6]), channels=st.sampled_from([None, 1, 3]))
def test_folder_loader_loads_or_refuses(classes, size, channels):
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for c, entries in enumerate(classes):
            (root / f"class_{c}").mkdir()
            for i, (kind, side, seed, damage) in enumerate(entries):
                suffix, data = image_file(kind, side, seed)
                (root / f"class_{c}" / f"{i}{suffix}").write_bytes(corrupt(data, *damage))
        loads_or_refuses({"source": "folder", "path": str(root), "image_size": size, "channels": channels,
                          "test_fraction": 0.3, "val_fraction": 0.0})


CSV_MUTATIONS = ["short row", "long row", "empty label", "empty group", "latin-1", "nul", "missing file",
                 "unknown split", "quote", "blank line", "drop header column", "junk"]


@st.composite
def manifests(draw) -> bytes:
    """A valid manifest over four images (single- or multi-label, with or without groups and splits), then zero
    to three random mutations of its text."""
    groups, splits, multi = draw(st.booleans()), draw(st.booleans()), draw(st.booleans())
    header = ["path", "label"] + (["group"] if groups else []) + (["split"] if splits else [])
    rows = []
    for i in range(draw(st.integers(2, 10))):
        row = [f"images/{i % 4}.png", ("a|b" if multi and i % 3 == 0 else "ab"[i % 2])]
        row += [f"g{i % 2}"] if groups else []
        row += [["train", "train", "test", "val"][i % 4]] if splits else []
        rows.append(row)
    lines = [",".join(header)] + [",".join(r) for r in rows]
    encoding = "utf-8"
    for mutation in draw(st.lists(st.sampled_from(CSV_MUTATIONS), max_size=3)):
        at = draw(st.integers(1, len(lines) - 1)) if len(lines) > 1 else 0
        if mutation == "short row":
            lines[at] = lines[at].rsplit(",", 1)[0]
        elif mutation == "long row":
            lines[at] += ",extra"
        elif mutation == "empty label" and lines[at].count(",") >= 1:
            parts = lines[at].split(",")
            lines[at] = ",".join([parts[0], "", *parts[2:]])
        elif mutation == "empty group" and groups:
            parts = lines[at].split(",")
            lines[at] = ",".join([*parts[:2], "", *parts[3:]])
        elif mutation == "latin-1":
            lines[at] += "\u00e9"
            encoding = "latin-1"
        elif mutation == "nul":
            lines[at] += "\x00"
        elif mutation == "missing file":
            lines[at] = lines[at].replace("images/", "nowhere/", 1)
        elif mutation == "unknown split" and splits:
            lines[at] = lines[at].rsplit(",", 1)[0] + ",holdout"
        elif mutation == "quote":
            lines[at] += ',"unterminated'
        elif mutation == "blank line":
            lines.insert(at, "")
        elif mutation == "drop header column":
            lines[0] = lines[0].split(",", 1)[-1]
        elif mutation == "junk":
            lines[at] = draw(st.text(max_size=12))
    return ("\n".join(lines) + "\n").encode(encoding, errors="replace")


@FUZZ
@given(text=manifests(), damage=corruptions)
def test_csv_loader_loads_or_refuses(text, damage):
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "images").mkdir()
        for i in range(4):
            suffix, data = image_file(["L", "RGB", "L", "P"][i], 6, i)
            (root / "images" / f"{i}.png").write_bytes(data)
        (root / "manifest.csv").write_bytes(corrupt(text, *damage))
        loads_or_refuses({"source": "csv", "path": str(root / "manifest.csv"), "test_fraction": 0.3,
                          "val_fraction": 0.0})
