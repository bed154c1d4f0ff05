"""The check that a run directory can be one, made before a run changes anything."""

from __future__ import annotations

import os
from pathlib import Path

from compressor.spec.errors import SpecError, clip

# Kernel file systems: writing a run there fails half-way or, worse, changes the system. /dev/shm is ordinary
# shared memory (tmpfs), a fine place for a scratch run.
SYSTEM_ROOTS = (Path("/proc"), Path("/sys"), Path("/dev"))
ALLOWED_UNDER_SYSTEM = (Path("/dev/shm"),)


def check_output_dir(path: str | Path) -> None:
    """Refuse a run directory that is a file, lies under a file or a kernel file system, or cannot be created.

    Only looks: nothing is created or changed, so a refused run leaves the file system as it was.

    Args:
        path: the run directory (``output_dir`` of the spec, or ``--out``); it may not exist yet.

    Raises:
        SpecError: one line naming the directory and the problem.
    """
    name = clip(str(path), 200)
    try:
        resolved = Path(path).resolve()
        root = next((root for root in SYSTEM_ROOTS if resolved.is_relative_to(root)), None)
        if root is not None and not any(resolved.is_relative_to(ok) for ok in ALLOWED_UNDER_SYSTEM):
            raise SpecError([f"run directory {name}: under {root}, a kernel file system; use a directory on disk"])
        if resolved.exists() and not resolved.is_dir():
            raise SpecError([f"run directory {name}: exists and is not a directory"])
        existing = resolved
        while not existing.exists():
            existing = existing.parent
        if existing != resolved and not existing.is_dir():
            raise SpecError([f"run directory {name}: {clip(str(existing), 200)} is a file, not a directory"])
        if not os.access(existing, os.W_OK | os.X_OK):
            where = "" if existing == resolved else f" ({clip(str(existing), 200)})"
            raise SpecError([f"run directory {name}: not writable{where}"])
    except (OSError, RuntimeError) as exc:  # a name too long, a symbolic-link loop, no permission to look
        reason = getattr(exc, "strerror", None) or str(exc)
        raise SpecError([f"run directory {name}: cannot be used ({clip(reason, 120)})"]) from None
