"""MedMNIST-layout arrays: ``{train,val,test}_{images,labels}``, optional ``{split}_groups`` and ``class_names``.

From an ``.npz`` file (members memory-mapped when stored uncompressed, see ``compressor.data.npz``) or a folder of
``<key>.npy`` files. Images are ``N x H x W`` or ``N x H x W x C`` (C in 1, 3, 4; alpha dropped) of ``uint8`` or
``uint16`` (kept as they are), another integer type (held as the smallest of the two that fits every value), or
floats (``float32``, which must be finite). Labels are ``N``, ``N x 1`` class indices or ``N x L`` 0/1 targets.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from compressor.data.errors import DataError
from compressor.data.labels import check_class_names, group_labels, labels_from_array
from compressor.data.npz import NpzArrays
from compressor.data.sources import SPLITS, RawData, image_side
from compressor.data.stores import ArrayStore
from compressor.data.types import Split
from compressor.spec.data import DataSpec

RANGE_CHUNK = 4096  # images per chunk when an integer array's value range is scanned


def _value_range(array: np.ndarray) -> tuple[int, int]:
    """Minimum and maximum of a (possibly memory-mapped) integer array, read in chunks."""
    low, high = None, None
    for start in range(0, len(array), RANGE_CHUNK):
        chunk = np.asarray(array[start : start + RANGE_CHUNK])
        if chunk.size:
            low = int(chunk.min()) if low is None else min(low, int(chunk.min()))
            high = int(chunk.max()) if high is None else max(high, int(chunk.max()))
    return (0, 0) if low is None else (low, high)


def _pixel_dtype(arrays: dict[str, np.ndarray], where: dict[str, str]) -> str:
    """The stored pixel type: uint8/uint16 kept, other integers narrowed to one that holds them, floats float32.

    Raises:
        DataError: boolean images, negative or too large integers, or splits of mixed kinds.
    """
    kinds = {split: a.dtype for split, a in arrays.items()}
    if any(d.kind == "b" for d in kinds.values()):
        raise DataError(f"{next(where[s] for s, d in kinds.items() if d.kind == 'b')}: boolean images; save pixels "
                        "as uint8 or uint16")
    if all(d.kind == "f" for d in kinds.values()):
        return "float32"
    if any(d.kind == "f" for d in kinds.values()):
        raise DataError(f"{', '.join(where.values())}: splits mix integer and float images")
    if len({d for d in kinds.values()}) == 1 and next(iter(kinds.values())) in (np.uint8, np.uint16):
        return str(next(iter(kinds.values())))
    low, high = 0, 0
    for split, array in arrays.items():
        a, b = _value_range(array)
        if a < 0 or b > 65535:
            raise DataError(f"{where[split]}: integer pixels span {a}..{b}; save them as uint8 or uint16, or as "
                            "float32 with data.window")
        low, high = min(low, a), max(high, b)
    return "uint8" if high <= 255 else "uint16"


def _image_shape(array: np.ndarray, where: str) -> tuple[int, int, int]:
    if array.ndim == 3:
        return array.shape[1], array.shape[2], 1
    if array.ndim != 4 or array.shape[-1] not in (1, 3, 4):
        raise DataError(f"{where}: expected N x H x W or N x H x W x C images (C in 1, 3, 4), got shape "
                        f"{array.shape}")
    return array.shape[1], array.shape[2], array.shape[3] - (1 if array.shape[3] == 4 else 0)


def load_npz_source(path: Path, spec: DataSpec) -> RawData:
    """MedMNIST layout from an ``.npz`` file or a folder of ``.npy`` files (see the module docstring).

    Raises:
        DataError: a missing or unreadable file, missing keys, or arrays that do not fit together.
    """
    if not path.exists():
        raise DataError(f"{path}: data file not found")
    archive = NpzArrays(path)
    keys = set(archive.keys)
    needed = [f"{s}_{k}" for s in SPLITS for k in ("images", "labels")]
    missing = [k for k in needed if k not in keys]
    if missing:
        layout = "folder of .npy files" if path.is_dir() else ".npz"
        raise DataError(f"{path}: missing keys {missing}; found {sorted(keys)} (expected MedMNIST layout in this "
                        f"{layout}: {needed})")
    images, mapped, where = {}, {}, {}
    for split in SPLITS:
        where[split] = archive.where(f"{split}_images")
        images[split], mapped[split] = archive.array(f"{split}_images")
    shapes = {split: _image_shape(a, where[split]) for split, a in images.items()}
    if spec.image_size is None and len({s[:2] for s in shapes.values()}) > 1:
        raise DataError(f"{path}: splits have different image sizes {sorted({s[:2] for s in shapes.values()})}; set "
                        "data.image_size to resize them to one")
    height, width, _ = shapes["train"]
    side = image_side(height, width, spec.image_size, where["train"])
    channels = spec.channels or max(s[2] for s in shapes.values())
    dtype = _pixel_dtype(images, where)
    splits, flags = {}, set()
    for split in SPLITS:
        count = len(images[split])
        labels_where = archive.where(f"{split}_labels")
        labels, multilabel = labels_from_array(archive.array(f"{split}_labels", mmap=False)[0], labels_where, count)
        groups = None
        if f"{split}_groups" in keys:
            groups = group_labels(archive.array(f"{split}_groups", mmap=False)[0], archive.where(f"{split}_groups"),
                                  count)
        store = ArrayStore(images[split], where[split], channels, side, dtype, mapped[split])
        splits[split] = Split(store, labels, groups)
        if count:
            flags.add(multilabel)
        where[split] = labels_where
    if len(flags) > 1:
        raise DataError(f"{path}: splits disagree on single- vs multi-label targets")
    class_names = None
    if "class_names" in keys:
        class_names = check_class_names(archive.array("class_names", mmap=False)[0], archive.where("class_names"))
    return RawData(splits, None, class_names, flags.pop() if flags else False, name=str(path), where=where)
