"""From a spec to a ``DataBundle``: load the source, split, convert, inject label noise, compute statistics."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from compressor.data.images import convert
from compressor.data.noise import inject_noise
from compressor.data.sources import SPLITS, load_source
from compressor.data.split import split_indices
from compressor.data.types import DataBundle, DataError, Split
from compressor.io import hash_file_into
from compressor.spec.root import Spec
from compressor.task import Task


def fingerprint(spec: Spec) -> str:
    """A hash that changes when the data set's files change (content for files, names/sizes/times for folders)."""
    data = spec.data
    digest = hashlib.sha256(data.source.encode())
    if data.source == "digits":
        import sklearn

        digest.update(f"sklearn-digits-{sklearn.__version__}".encode())
        return digest.hexdigest()
    path = Path(data.path).expanduser()
    if not path.exists():
        raise DataError(f"{path}: data {'folder' if data.source == 'folder' else 'file'} not found")
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    if data.source == "csv":
        files += sorted(p for p in path.parent.rglob("*") if p.is_file() and p != path)
    for file in files:
        stat = file.stat()
        digest.update(f"{file.relative_to(path.parent)}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    if path.is_file():
        hash_file_into(digest, path)
    return digest.hexdigest()


def _channel_stats(images) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of ``uint8`` images scaled to [0, 1] (std floored to avoid division by zero)."""
    x = images.float().div_(255.0)
    mean = x.mean(dim=(0, 2, 3))
    std = x.std(dim=(0, 2, 3)).clamp_min(1e-3)
    return [round(float(v), 6) for v in mean], [round(float(v), 6) for v in std]


def prepare_data(spec: Spec) -> DataBundle:
    """Build the bundle the pipeline trains on: noisy train/val labels, clean test labels.

    Raises:
        DataError: the data set cannot be read or does not fit the spec.
    """
    raw = load_source(spec.data)
    if raw.splits is None:
        index = split_indices(raw.pool.labels, spec.data.val_fraction, spec.data.test_fraction, spec.seed)
        splits = {name: raw.pool.subset(index[name]) for name in SPLITS}
    else:
        splits = raw.splits
    for name in ("train", "test"):
        if len(splits[name]) == 0:
            raise DataError(f"the {name} split is empty")
    for split in splits.values():
        split.images = convert(split.images, spec.data.channels, spec.data.image_size)

    multilabel = raw.multilabel
    if spec.data.task == Task.MULTICLASS and multilabel:
        raise DataError("data.task is 'multiclass' but the labels are multi-label (N x L)")
    if spec.data.task == Task.MULTILABEL and not multilabel:
        raise DataError("data.task is 'multilabel' but the labels are single class indices")
    if multilabel:
        num_classes = int(splits["train"].labels.shape[1])
    else:
        num_classes = int(max(int(s.labels.max(initial=0)) for s in splits.values())) + 1
    class_names = spec.data.class_names or raw.class_names or [str(i) for i in range(num_classes)]
    if len(class_names) != num_classes:
        raise DataError(f"data.class_names has {len(class_names)} names for {num_classes} classes")
    num_classes = len(class_names)

    for offset, name in enumerate(("train", "val")):
        split = splits[name]
        if len(split) == 0:
            continue
        noisy, _ = inject_noise(
            split.labels, num_classes, spec.noise.kind, spec.noise.rate, spec.noise.matrix, spec.seed * 7919 + offset
        )
        if spec.noise.kind != "none":
            split.clean_labels = split.labels
        split.labels = noisy

    mean, std = _channel_stats(splits["train"].images)
    task = Task.MULTILABEL if multilabel else Task.MULTICLASS
    return DataBundle(splits["train"], splits["val"], splits["test"], task, list(class_names), mean, std)


def label_arrays(bundle: DataBundle) -> dict[str, np.ndarray]:
    """The arrays the data stage saves: labels (noisy for train/val), clean labels and noise masks per split."""
    arrays: dict[str, np.ndarray] = {}
    for name in SPLITS:
        split: Split = getattr(bundle, name)
        arrays[f"{name}_labels"] = split.labels
        arrays[f"{name}_noise_mask"] = split.noise_mask
        if split.clean_labels is not None:
            arrays[f"{name}_clean_labels"] = split.clean_labels
    return arrays


def noise_summary(bundle: DataBundle) -> dict:
    """Realised noise rate per split, for the report and metrics."""
    return {
        name: {"samples": len(getattr(bundle, name)), "noise_rate": float(getattr(bundle, name).noise_mask.mean())
               if len(getattr(bundle, name)) else 0.0}
        for name in SPLITS
    }
