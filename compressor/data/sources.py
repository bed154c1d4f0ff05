"""Data sources: built-in digits, MedMNIST-layout ``.npz``, image folder, CSV manifest.

Each loader returns a ``RawData``: either the source's own train/val/test splits, or one pool to be split.
Nothing is ever downloaded.
"""

from __future__ import annotations

import csv
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from compressor.data.images import IMAGE_SUFFIXES, array_to_nchw, read_images
from compressor.data.types import DataError, Split
from compressor.spec.data import DataSpec

SPLITS = ("train", "val", "test")


@dataclass
class RawData:
    """What a source provides: ``splits`` (train/val/test) or ``pool`` (to be split), labels and class names."""

    splits: dict[str, Split] | None
    pool: Split | None
    class_names: list[str] | None
    multilabel: bool


def load_digits_source() -> RawData:
    """scikit-learn's bundled 8x8 handwritten digits (1797 images, 10 classes, pixel values 0-16)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = np.rint(digits.images * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)
    tensor = torch.from_numpy(images)[:, None].contiguous()
    labels = digits.target.astype(np.int64)
    return RawData(None, Split(tensor, labels), [str(i) for i in range(10)], multilabel=False)


def _labels_from_array(labels: np.ndarray, name: str, count: int) -> tuple[np.ndarray, bool]:
    """MedMNIST labels ``N x 1`` (class index) or ``N x L`` (multi-label 0/1) to the internal form."""
    labels = np.asarray(labels)
    if labels.ndim == 1:
        labels = labels[:, None]
    if labels.ndim != 2:
        raise DataError(f"{name}: labels must be N x 1 or N x L, got shape {labels.shape}")
    if labels.shape[0] != count:
        raise DataError(f"{name}: {labels.shape[0]} labels for {count} images")
    if labels.shape[1] == 1:
        if not np.all(np.equal(np.mod(labels, 1), 0)) or labels.min(initial=0) < 0:
            raise DataError(f"{name}: class labels must be non-negative integers")
        return labels[:, 0].astype(np.int64), False
    if not np.isin(labels, (0, 1)).all():
        raise DataError(f"{name}: multi-label targets must be 0/1, found values {np.unique(labels)[:5]}")
    return labels.astype(np.float32), True


def load_npz_source(path: Path) -> RawData:
    """MedMNIST layout: ``{train,val,test}_{images,labels}`` and optional ``{split}_groups``."""
    if not path.exists():
        raise DataError(f"{path}: data file not found")
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise DataError(f"{path}: not a readable .npz file ({exc})") from None
    with archive:
        keys = set(archive.files)
        needed = [f"{s}_{k}" for s in SPLITS for k in ("images", "labels")]
        missing = [k for k in needed if k not in keys]
        if missing:
            raise DataError(
                f"{path}: missing keys {missing}; found {sorted(keys)} (expected MedMNIST layout: {needed})"
            )
        splits, multilabel_flags = {}, set()
        for split in SPLITS:
            images = array_to_nchw(archive[f"{split}_images"], f"{path}:{split}_images")
            labels, multilabel = _labels_from_array(archive[f"{split}_labels"], f"{path}:{split}_labels", len(images))
            groups = None
            if f"{split}_groups" in keys:
                groups = np.asarray(archive[f"{split}_groups"]).reshape(-1).astype(np.int64)
                if len(groups) != len(images):
                    raise DataError(f"{path}:{split}_groups has {len(groups)} entries for {len(images)} images")
            splits[split] = Split(images, labels, groups)
            multilabel_flags.add(multilabel)
        if len(multilabel_flags) != 1:
            raise DataError(f"{path}: splits disagree on single- vs multi-label targets")
        shapes = {tuple(s.images.shape[1:]) for s in splits.values()}
        if len(shapes) != 1:
            raise DataError(f"{path}: splits have different image shapes {sorted(shapes)}")
    return RawData(splits, None, None, multilabel_flags.pop())


def _class_folders(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def _folder_split(root: Path, class_names: list[str], spec: DataSpec) -> Split:
    paths, labels = [], []
    for index, name in enumerate(class_names):
        folder = root / name
        if not folder.is_dir():
            continue
        files = sorted(f for f in folder.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES)
        paths += files
        labels += [index] * len(files)
    if not paths:
        raise DataError(f"{root}: no images found (expected one sub-folder per class holding image files)")
    images = read_images(paths, spec.channels, spec.image_size)
    return Split(images, np.asarray(labels, dtype=np.int64))


def load_folder_source(root: Path, spec: DataSpec) -> RawData:
    """One sub-folder per class; or ``train/``, ``val/``, ``test/`` each holding one sub-folder per class."""
    if not root.is_dir():
        raise DataError(f"{root}: image folder not found")
    if all((root / s).is_dir() for s in SPLITS):
        class_names = sorted({p.name for s in SPLITS for p in _class_folders(root / s)})
        splits = {s: _folder_split(root / s, class_names, spec) for s in SPLITS}
        return RawData(splits, None, class_names, multilabel=False)
    class_names = [p.name for p in _class_folders(root)]
    if not class_names:
        raise DataError(f"{root}: no class sub-folders found")
    return RawData(None, _folder_split(root, class_names, spec), class_names, multilabel=False)


def load_csv_source(path: Path, spec: DataSpec) -> RawData:
    """CSV manifest with header ``path,label[,group][,split]``; multi-label rows as ``a|b``; paths relative to it."""
    if not path.exists():
        raise DataError(f"{path}: CSV manifest not found")
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        columns = reader.fieldnames or []
        if "path" not in columns or "label" not in columns:
            raise DataError(f"{path}: the header must contain 'path' and 'label' columns, found {columns}")
        rows = list(reader)
    if not rows:
        raise DataError(f"{path}: the manifest has no rows")
    multilabel = any("|" in r["label"] for r in rows)
    names = sorted({name for r in rows for name in r["label"].split("|") if name != ""})
    index = {name: i for i, name in enumerate(names)}
    if multilabel:
        labels = np.zeros((len(rows), len(names)), dtype=np.float32)
        for i, r in enumerate(rows):
            for name in filter(None, r["label"].split("|")):
                labels[i, index[name]] = 1.0
    else:
        labels = np.asarray([index[r["label"]] for r in rows], dtype=np.int64)
    groups = None
    if "group" in columns:
        group_names = sorted({r["group"] for r in rows})
        groups = np.asarray([group_names.index(r["group"]) for r in rows], dtype=np.int64)
    images = read_images([path.parent / r["path"] for r in rows], spec.channels, spec.image_size)
    pool = Split(images, labels, groups)
    if "split" in columns:
        kinds = np.asarray([r["split"].strip().lower() for r in rows])
        unknown = sorted(set(kinds) - set(SPLITS))
        if unknown:
            raise DataError(f"{path}: unknown split values {unknown} (use train, val, test)")
        splits = {s: pool.subset(np.flatnonzero(kinds == s)) for s in SPLITS}
        empty = [s for s, v in splits.items() if len(v) == 0]
        if empty:
            raise DataError(f"{path}: splits {empty} have no rows")
        return RawData(splits, None, names, multilabel)
    return RawData(None, pool, names, multilabel)


def load_source(spec: DataSpec) -> RawData:
    """Dispatch on ``spec.source``."""
    if spec.source == "digits":
        return load_digits_source()
    path = Path(spec.path).expanduser()
    if spec.source == "npz":
        return load_npz_source(path)
    if spec.source == "folder":
        return load_folder_source(path, spec)
    return load_csv_source(path, spec)
