"""Atomic file writes (every artifact is written to a temporary file and renamed into place), reproducible ``.npz``
files and file hashing."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is fsync'd and renamed onto ``path``, else removed.

    A reader never sees a half-written file: either the old content or the complete new one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as handle:
            os.fsync(handle.fileno())
        umask = os.umask(0)  # the process umask, read by setting and restoring it
        os.umask(umask)
        os.chmod(tmp_path, 0o666 & ~umask)  # mkstemp creates 0600; give the file the usual permissions
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


def write_text(path: str | Path, text: str) -> None:
    """Atomically write ``text`` to ``path``."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_bytes(path: str | Path, data: bytes) -> None:
    """Atomically write ``data`` to ``path``."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_json(path: str | Path, obj: Any) -> None:
    """Atomically write ``obj`` as indented JSON (NaN written as null)."""
    write_text(path, json.dumps(_finite(obj), indent=2, sort_keys=False) + "\n")


def write_npz(path: str | Path, arrays: dict[str, np.ndarray]) -> None:
    """Write ``arrays`` atomically as a compressed ``.npz`` (what ``np.savez_compressed`` writes and ``np.load``
    reads) whose bytes depend on the arrays alone: every member carries the same fixed timestamp, where
    ``np.savez_compressed`` stamps the time of writing, so two runs that save the same arrays write the same file."""
    with atomic_path(path) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as archive:
        for key, array in arrays.items():
            info = zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            with archive.open(info, "w", force_zip64=True) as handle:
                np.lib.format.write_array(handle, np.asanyarray(array), allow_pickle=False)


def read_json(path: str | Path) -> Any:
    """Read a JSON file."""
    return json.loads(Path(path).read_text())


def _finite(obj: Any) -> Any:
    """Replace non-finite floats by None so the JSON stays standard."""
    if isinstance(obj, float):
        return obj if obj == obj and obj not in (float("inf"), float("-inf")) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def hash_file_into(digest: Any, path: str | Path) -> None:
    """Feed the bytes of ``path`` into ``digest`` (a ``hashlib`` object), 1 MiB at a time."""
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)


def sha256_file(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    hash_file_into(digest, path)
    return digest.hexdigest()


TEMP_PATTERN = ".*.tmp"  # the names ``atomic_path`` gives its temporary files (``.<name>.<random>.tmp``)


def remove_stale_temps(root: str | Path, recursive: bool = True) -> list[Path]:
    """Remove the temporary files a killed writer left in ``root`` (0-byte or partial); return them.

    Only names of ``atomic_path``'s pattern are touched. Call it while no other process writes into ``root``.

    Args:
        root: the folder to clean.
        recursive: also clean every folder below it.
    """
    root = Path(root)
    if not root.is_dir():
        return []
    found = root.rglob(TEMP_PATTERN) if recursive else root.glob(TEMP_PATTERN)
    stale = [p for p in found if p.is_file() and not p.is_symlink()]
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def publish_together(files: dict[Path, Path | None], journal: str | Path) -> None:
    """Swap a set of files into place as one unit: after a kill at any moment, no mix of old and new files remains.

    A journal naming every move is written first (atomically); then every target that is being replaced or removed
    is deleted, and only then are the staged files renamed in. So a reader sees the old set, a subset of the new
    set (never an old file beside a new one), or the new set. ``finish_publish`` replays an interrupted journal, which
    the next run does before it looks at the targets.

    Args:
        files: target path -> staged file to rename onto it (same file system), or None to remove the target (a
            stale file of the previous set that the new set does not have).
        journal: where the journal lives while the swap is under way.
    """
    write_json(journal, {"files": [[str(target), None if staged is None else str(staged)]
                                   for target, staged in files.items()]})
    finish_publish(journal)


def finish_publish(journal: str | Path) -> bool:
    """Complete the swap recorded in ``journal`` (see ``publish_together``); return whether there was one.

    Idempotent: a target whose staged file was already renamed in is left alone, so replaying a journal after a
    kill during the renames finishes them without touching what is already new.
    """
    journal = Path(journal)
    try:
        moves = [(Path(t), None if s is None else Path(s)) for t, s in read_json(journal)["files"]]
    except FileNotFoundError:
        return False
    except (OSError, ValueError, KeyError, TypeError):  # not a journal this code wrote: nothing safe to replay
        journal.unlink(missing_ok=True)
        return False
    pending = [(target, staged) for target, staged in moves if staged is None or staged.exists()]
    for target, _ in pending:  # every old file goes before any new one arrives
        target.unlink(missing_ok=True)
    for target, staged in pending:
        if staged is not None:
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(staged, target)
    journal.unlink(missing_ok=True)
    return True
