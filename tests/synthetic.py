"""Small synthetic data sets in the formats compressor reads (MedMNIST .npz, image folder, CSV manifest).

Images carry a learnable class signal (a bright square whose position depends on the class) plus noise, so a
pipeline run on them reaches well-above-chance accuracy in a few epochs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def class_images(labels: np.ndarray, size: int = 12, channels: int = 1, seed: int = 0) -> np.ndarray:
    """``uint8`` images ``N x H x W`` (or ``N x H x W x 3``) with a class-dependent bright square."""
    rng = np.random.default_rng(seed)
    n = len(labels)
    images = rng.integers(0, 60, size=(n, size, size), dtype=np.int64)
    cells = max(1, size // 4)
    for i, label in enumerate(labels):
        row, col = divmod(int(label) % 9, 3)
        images[i, row * cells : row * cells + cells, col * cells : col * cells + cells] += 180
    images = np.clip(images, 0, 255).astype(np.uint8)
    if channels == 3:
        images = np.stack([images, images[:, ::-1], images // 2 + 40], axis=-1)
    return images


def write_npz(
    path: Path,
    *,
    num_classes: int = 4,
    sizes: tuple[int, int, int] = (120, 40, 40),
    image_size: int = 12,
    channels: int = 1,
    multilabel: int = 0,
    groups: bool = False,
    drop_keys: tuple[str, ...] = (),
    seed: int = 0,
) -> Path:
    """A MedMNIST-layout ``.npz``; ``multilabel=L`` writes ``N x L`` 0/1 labels; ``drop_keys`` removes keys."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, n in zip(("train", "val", "test"), sizes, strict=False):
        classes = rng.integers(0, num_classes, size=n)
        arrays[f"{split}_images"] = class_images(classes, image_size, channels, seed=seed + n)
        if multilabel:
            labels = (rng.random((n, multilabel)) < 0.2).astype(np.uint8)  # extra co-occurring findings
            labels[np.arange(n), classes % multilabel] = 1
            arrays[f"{split}_labels"] = labels
        else:
            arrays[f"{split}_labels"] = classes.reshape(-1, 1).astype(np.uint8)
        if groups:
            arrays[f"{split}_groups"] = (rng.random(n) < 0.8).astype(np.int64)
    for key in drop_keys:
        arrays.pop(key)
    np.savez(path, **arrays)
    return path


def write_folder(
    root: Path, *, num_classes: int = 3, per_class: int = 20, image_size: int = 12, rgb: bool = False
) -> Path:
    """``root/<class>/<i>.png`` images."""
    for c in range(num_classes):
        folder = root / f"class_{c}"
        folder.mkdir(parents=True, exist_ok=True)
        images = class_images(np.full(per_class, c), image_size, 3 if rgb else 1, seed=c)
        for i, image in enumerate(images):
            Image.fromarray(image).save(folder / f"{i}.png")
    return root


def write_csv(
    root: Path, *, num_classes: int = 3, per_class: int = 20, image_size: int = 12, multilabel: bool = False,
    groups: bool = False,
) -> Path:
    """``root/images/*.png`` and ``root/manifest.csv`` with ``path,label[,group]``."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    lines = ["path,label" + (",group" if groups else "")]
    for c in range(num_classes):
        for i, image in enumerate(class_images(np.full(per_class, c), image_size, 1, seed=c)):
            name = f"images/c{c}_{i}.png"
            Image.fromarray(image).save(root / name)
            label = f"l{c}|l{(c + 1) % num_classes}" if multilabel and i % 2 else f"l{c}"
            lines.append(f"{name},{label}" + (f",{'a' if i % 5 else 'b'}" if groups else ""))
    manifest = root / "manifest.csv"
    manifest.write_text("\n".join(lines) + "\n")
    return manifest


FAST_TRAINING = {
    "epochs": 2, "batch_size": 32, "optimizer": {"name": "sgd", "lr": 0.05}, "schedule": {"name": "constant"}
}


def fast_spec(**sections) -> dict:
    """A raw spec that trains tiny models for two epochs: for pipeline tests that must take seconds."""
    spec = {
        "seed": 0,
        "device": "cpu",
        "subsets": {"count": 2, "overlap": 0.5},
        "teachers": {"archs": ["tiny_cnn", "small_cnn"], "training": dict(FAST_TRAINING)},
        "student": {"arch": "tiny_cnn"},
        "distillation": {"training": dict(FAST_TRAINING), "averaging": {"warmup_epochs": 0}},
    }
    for key, value in sections.items():
        spec[key] = value if not isinstance(value, dict) or key not in spec else {**spec[key], **value}
    return spec


def statuses(results) -> dict[str, str]:
    """Stage name -> status (``ran`` / ``skipped``) of a ``run_pipeline`` result list."""
    return {r.name: r.status for r in results}


def errors_of(raw: dict, overrides=()) -> list[str]:
    """The messages of the ``SpecError`` that parsing ``raw`` (with ``overrides``) must raise."""
    import pytest

    from compressor.spec import SpecError, parse_spec

    with pytest.raises(SpecError) as info:
        parse_spec(raw, overrides)
    return info.value.messages


def png_bytes(array: np.ndarray, bit_depth: int = 8) -> bytes:
    """A PNG written by hand (zlib + struct): ``H x W`` grey or ``H x W x C`` (C = 2 grey+alpha, 3 RGB, 4 RGBA) of
    8 or 16 bits -- including 16-bit colour, which Pillow cannot write."""
    import struct
    import zlib

    array = array if array.ndim == 3 else array[:, :, None]
    height, width, channels = array.shape
    colour_type = {1: 0, 2: 4, 3: 2, 4: 6}[channels]
    dtype = ">u2" if bit_depth == 16 else "u1"
    raw = b"".join(b"\x00" + array[row].astype(dtype).tobytes() for row in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


def above_4000_images(labels: np.ndarray, size: int = 16, seed: int = 0) -> np.ndarray:
    """``uint16 N x H x W`` images whose classes differ only in pixels above 4000: every image is noise in 0..4000;
    class 1 adds a bright square (20000-60000) at a random place. Clipped to 8 bits both classes look alike."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 4001, size=(len(labels), size, size))
    side = max(2, size // 4)
    for i, label in enumerate(labels):
        if label == 1:
            row, col = rng.integers(0, size - side + 1, size=2)
            images[i, row : row + side, col : col + side] = rng.integers(20000, 60001, size=(side, side))
    return images.astype(np.uint16)


def write_png16_folder(root: Path, *, per_class: int = 40, size: int = 16, seed: int = 0) -> Path:
    """``root/{negative,positive}/<i>.png``: 16-bit grayscale PNGs of ``above_4000_images``."""
    for label, name in enumerate(("negative", "positive")):
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for i, image in enumerate(above_4000_images(np.full(per_class, label), size, seed + label)):
            Image.fromarray(image).save(folder / f"{i}.png")
    return root


def write_dicom(path: Path, stored: np.ndarray, *, monochrome1: bool = False, slope: float = 1.0,
                intercept: float = 0.0, bits_stored: int = 12, signed: bool = False,
                window: tuple[float, float] | None = None) -> Path:
    """A single-frame monochrome DICOM file (explicit VR little endian) written by pydicom, with ``stored`` as its
    stored pixel values, a modality rescale and, when given, a VOI window ``(center, width)``."""
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid(entropy_srcs=[str(path)])
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality = "CR"
    ds.Rows, ds.Columns = stored.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME1" if monochrome1 else "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, bits_stored, bits_stored - 1
    ds.PixelRepresentation = 1 if signed else 0
    ds.RescaleSlope, ds.RescaleIntercept = f"{slope:g}", f"{intercept:g}"
    if window is not None:
        ds.WindowCenter, ds.WindowWidth = f"{window[0]:g}", f"{window[1]:g}"
    ds.PixelData = stored.astype(np.int16 if signed else np.uint16).tobytes()
    ds.save_as(str(path), enforce_file_format=True)
    return path


def count_store_reads(monkeypatch) -> list[int]:
    """Record the row count of every read of a ``LazyStore`` (in the returned list) and fail a whole-store read."""
    from compressor.data import stores

    reads: list[int] = []
    fetch = stores.LazyStore.fetch

    def counted(self, index):
        reads.append(len(index))
        return fetch(self, index)

    def refused(*args, **kwargs):
        raise AssertionError("a store was read whole into memory")

    monkeypatch.setattr(stores.LazyStore, "fetch", counted)
    monkeypatch.setattr(stores, "materialize", refused)
    return reads
