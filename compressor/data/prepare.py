"""From a spec to a ``DataBundle``: load the source, split, check labels, window and statistics, inject noise."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from compressor.data.errors import DataError
from compressor.data.labels import class_count
from compressor.data.noise import inject_noise
from compressor.data.sources import SPLITS, RawData, load_source
from compressor.data.split import split_indices
from compressor.data.stats import PixelStats, pixel_statistics
from compressor.data.stores import LazyStore, materialize
from compressor.data.types import DataBundle, Split, pixel_dtype_name
from compressor.export.decode import PixelFormat
from compressor.io import hash_file_into
from compressor.spec.root import Spec
from compressor.task import Task

IN_MEMORY_BYTES = 256 << 20  # data.load: auto holds a data set in memory up to this many bytes of pixels


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
    if data.source == "csv" and path.is_file():
        files += sorted(p for p in path.parent.rglob("*") if p.is_file() and p != path)
    for file in files:
        stat = file.stat()
        digest.update(f"{file.relative_to(path.parent)}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    if path.is_file():
        try:
            hash_file_into(digest, path)
        except OSError as exc:
            raise DataError(f"{path}: cannot read ({exc.strerror})") from None
    return digest.hexdigest()


def _splits(raw: RawData, spec: Spec) -> dict[str, Split]:
    if raw.splits is not None:
        splits = raw.splits
    else:
        if len(raw.pool) < 2:
            raise DataError(f"{raw.name}: {len(raw.pool)} image(s); a train and a test split need at least two")
        index = split_indices(raw.pool.labels, spec.data.val_fraction, spec.data.test_fraction, spec.seed)
        splits = {name: raw.pool.subset(index[name]) for name in SPLITS}
    for name in ("train", "test"):
        if len(splits[name]) == 0:
            raise DataError(f"{raw.where.get(name, raw.name)}: the {name} split is empty")
    return splits


def _task(raw: RawData, spec: Spec) -> Task:
    if spec.data.task == Task.MULTICLASS and raw.multilabel:
        raise DataError(f"{raw.name}: data.task is 'multiclass' but the labels are multi-label (N x L)")
    if spec.data.task == Task.MULTILABEL and not raw.multilabel:
        raise DataError(f"{raw.name}: data.task is 'multilabel' but the labels are single class indices")
    return Task.MULTILABEL if raw.multilabel else Task.MULTICLASS


def _hold_in_memory(splits: dict[str, Split], load: str) -> None:
    """``data.load``: ``memory`` reads every split into memory, ``auto`` does so when the pixels are small."""
    lazy = [s for s in splits.values() if isinstance(s.images, LazyStore)]
    total = sum(s.images.nbytes for s in lazy)
    if load == "memory" or (load == "auto" and total <= IN_MEMORY_BYTES):
        for split in lazy:
            split.images = materialize(split.images)


def _known_stats(known: dict | None, dtype: str, channels: int) -> PixelStats | None:
    """The statistics a data stage already recorded (``data/summary.json``), when they fit these pixels."""
    if not known or "pixels" not in known:
        return None
    try:
        fmt = PixelFormat.from_json(known["pixels"])
        mean, std = [float(v) for v in known["mean"]], [float(v) for v in known["std"]]
    except (KeyError, TypeError, ValueError):
        return None
    return PixelStats(fmt, mean, std) if fmt.dtype == dtype and len(mean) == len(std) == channels else None


def prepare_data(spec: Spec, known: dict | None = None) -> DataBundle:
    """Build the bundle the pipeline trains on: noisy train/val labels, clean test labels.

    Args:
        spec: the run spec (its ``data``, ``noise`` and ``seed``).
        known: the data stage's ``data/summary.json``: its window and statistics are reused instead of reading
            every image again (later stages of a run).

    Raises:
        DataError: the data set cannot be read or does not fit the spec (one line naming the file and key).
    """
    data = spec.data
    raw = load_source(data)
    splits = _splits(raw, spec)
    task = _task(raw, spec)
    names = data.class_names or raw.class_names
    num_classes = class_count({n: s.labels for n, s in splits.items()}, raw.where, names, raw.multilabel)
    class_names = list(names) if names is not None else [str(i) for i in range(num_classes)]

    _hold_in_memory(splits, data.load)
    for split in splits.values():
        split.workers = data.workers
        if isinstance(split.images, LazyStore):
            split.images.workers = data.workers
    train = splits["train"].images
    stats = _known_stats(known, pixel_dtype_name(train), int(train.shape[1]))
    if stats is None:
        stats = pixel_statistics(train, [splits["val"].images, splits["test"].images], data.window, raw.name,
                                 data.workers)
    for split in splits.values():
        split.pixel_format = stats.pixel_format

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
    return DataBundle(splits["train"], splits["val"], splits["test"], task, class_names, stats.mean, stats.std,
                      stats.pixel_format)


def data_summary(bundle: DataBundle) -> dict:
    """What ``data/summary.json`` records about the pixels: shape, type, window and channel statistics."""
    channels, height, width = bundle.image_shape
    return {"image": [channels, height, width], "pixels": bundle.pixel_format.as_json(), "mean": bundle.mean,
            "std": bundle.std, "classes": bundle.class_names}


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
