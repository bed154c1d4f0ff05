"""Image files as a data set: a folder with one sub-folder per class, or a CSV manifest.

Only paths and labels are held: every file's header is read once (size, channels, bit depth: mixed bit depths and,
without ``data.image_size``, mixed or non-square sizes are refused up front), and the pixels are decoded when a
batch needs them (``compressor.data.stores.FileStore``).
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np

from compressor.data.errors import DataError
from compressor.data.sources import SPLITS, RawData, image_side
from compressor.data.stores import FileStore
from compressor.data.types import Split
from compressor.export.decode import IMAGE_SUFFIXES, DecodeError, read_header
from compressor.spec.data import DataSpec


def file_store(paths: list[Path], spec: DataSpec, where: str) -> FileStore:
    """A store over ``paths``, after reading every header (see the module docstring).

    Raises:
        DataError: an unreadable file, mixed bit depths, or sizes that need ``data.image_size``.
    """
    if not paths:
        raise DataError(f"{where}: no images")
    headers = []
    for path in paths:
        try:
            headers.append(read_header(path, str(path)))
        except DecodeError as exc:
            raise DataError(str(exc)) from None
    dtypes = {h.dtype: p for h, p in zip(headers, paths, strict=True)}
    if len(dtypes) > 1:
        examples = ", ".join(f"{p} is {d}" for d, p in sorted(dtypes.items()))
        raise DataError(f"{where}: files of different bit depths ({examples}); convert them to one")
    sizes = {(h.height, h.width): p for h, p in zip(headers, paths, strict=True)}
    if spec.image_size is None and len(sizes) > 1:
        examples = ", ".join(f"{p} is {h}x{w}" for (h, w), p in list(sizes.items())[:2])
        raise DataError(f"{where}: images of different sizes ({examples}); set data.image_size to resize them")
    (height, width), first = next(iter(sizes.items()))
    side = image_side(height, width, spec.image_size, str(first))
    channels = spec.channels or (3 if any(h.channels == 3 for h in headers) else 1)
    return FileStore(paths, channels, side, next(iter(dtypes)))


def _class_folders(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def _folder_split(root: Path, class_names: list[str], spec: DataSpec) -> Split:
    paths, labels = [], []
    for index, name in enumerate(class_names):
        folder = root / name
        if not folder.is_dir():
            continue
        files = sorted(f for f in folder.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
        paths += files
        labels += [index] * len(files)
    if not paths:
        raise DataError(f"{root}: no images found (expected one sub-folder per class holding image files)")
    return Split(file_store(paths, spec, str(root)), np.asarray(labels, dtype=np.int64))


def load_folder_source(root: Path, spec: DataSpec) -> RawData:
    """One sub-folder per class; or ``train/``, ``val/``, ``test/`` each holding one sub-folder per class.

    Raises:
        DataError: not a folder, no class folders or no images, or unusable images.
    """
    if not root.exists():
        raise DataError(f"{root}: image folder not found")
    if not root.is_dir():
        raise DataError(f"{root}: is a file; data.path of a folder source must be a folder with one sub-folder "
                        "per class")
    if all((root / s).is_dir() for s in SPLITS):
        class_names = sorted({p.name for s in SPLITS for p in _class_folders(root / s)})
        splits = {s: _folder_split(root / s, class_names, spec) for s in SPLITS}
        return RawData(splits, None, class_names, multilabel=False, name=str(root),
                       where={s: str(root / s) for s in SPLITS})
    class_names = [p.name for p in _class_folders(root)]
    if not class_names:
        raise DataError(f"{root}: no class sub-folders found")
    return RawData(None, _folder_split(root, class_names, spec), class_names, multilabel=False, name=str(root),
                   where={s: f"{root} ({s})" for s in SPLITS})


def _manifest_rows(path: Path) -> tuple[list[str], list[tuple[int, dict[str, str]]]]:
    """The header and ``(line, row)`` pairs of a CSV manifest, every row complete.

    Raises:
        DataError: a folder, a file that is not UTF-8 text, malformed CSV, or a row of the wrong length.
    """
    if not path.exists():
        raise DataError(f"{path}: CSV manifest not found")
    if path.is_dir():
        raise DataError(f"{path}: is a folder; data.path of a csv source must be the CSV manifest file")
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text (byte {exc.start}); save the manifest as UTF-8") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror})") from None
    if "\x00" in text:
        raise DataError(f"{path}: a binary file, not a CSV manifest")
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = [name.strip() for name in next(reader, [])]
        rows = []
        for values in reader:
            if not values or all(not v.strip() for v in values):
                continue
            if len(values) != len(header):
                raise DataError(f"{path}: line {reader.line_num} has {len(values)} fields; the header has "
                                f"{len(header)} ({','.join(header)})")
            rows.append((reader.line_num, dict(zip(header, (v.strip() for v in values), strict=True))))
    except csv.Error as exc:
        raise DataError(f"{path}: line {reader.line_num}: malformed CSV ({exc})") from None
    if "path" not in header or "label" not in header:
        raise DataError(f"{path}: the header must contain 'path' and 'label' columns, found {header}")
    if len(set(header)) != len(header):
        raise DataError(f"{path}: duplicate column names in the header {header}")
    for line, row in rows:
        for column in ("path", "label", "group", "split"):
            if column in row and not row[column]:
                raise DataError(f"{path}: line {line} has no {column} value")
    if not rows:
        raise DataError(f"{path}: the manifest has no rows")
    return header, rows


def load_csv_source(path: Path, spec: DataSpec) -> RawData:
    """CSV manifest with header ``path,label[,group][,split]``; multi-label rows as ``a|b``; paths relative to it.

    Raises:
        DataError: an unreadable manifest, incomplete rows, unknown split names or unusable images.
    """
    columns, rows = _manifest_rows(path)
    multilabel = any("|" in r["label"] for _, r in rows)
    names = sorted({name for _, r in rows for name in r["label"].split("|") if name != ""})
    index = {name: i for i, name in enumerate(names)}
    if multilabel:
        labels = np.zeros((len(rows), len(names)), dtype=np.float32)
        for i, (_, r) in enumerate(rows):
            for name in filter(None, r["label"].split("|")):
                labels[i, index[name]] = 1.0
    else:
        labels = np.asarray([index[r["label"]] for _, r in rows], dtype=np.int64)
    groups = None
    if "group" in columns:  # group names numbered in sorted order
        groups = np.unique([r["group"] for _, r in rows], return_inverse=True)[1].astype(np.int64)
    store = file_store([path.parent / r["path"] for _, r in rows], spec, str(path))
    pool = Split(store, labels, groups)
    where = {s: f"{path} ({s} rows)" for s in SPLITS}
    if "split" in columns:
        kinds = np.asarray([r["split"].lower() for _, r in rows])
        unknown = sorted(set(kinds.tolist()) - set(SPLITS))
        if unknown:
            line = rows[int(np.flatnonzero(kinds == unknown[0])[0])][0]
            raise DataError(f"{path}: line {line}: unknown split value {unknown[0]!r} (use train, val, test)")
        splits = {s: pool.subset(np.flatnonzero(kinds == s)) for s in SPLITS}
        return RawData(splits, None, names, multilabel, name=str(path), where=where)
    return RawData(None, pool, names, multilabel, name=str(path), where=where)
