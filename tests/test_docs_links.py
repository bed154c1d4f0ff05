"""The repository explains itself: every link in its markdown resolves inside it, and nothing names a document
that is not in it."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUTSIDE = ("DESIGN.md", "../shared", "/shared/papers")


def tracked_files() -> list[Path]:
    """The repository's files: git's list when it is a checkout, else every file under the root but .venv/runs."""
    try:
        names = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
        return [ROOT / name for name in names.splitlines() if (ROOT / name).is_file()]
    except (OSError, subprocess.CalledProcessError):
        skip = {".venv", "runs", ".git", "build"}
        return [p for p in ROOT.rglob("*") if p.is_file() and not skip & set(p.relative_to(ROOT).parts)]


def test_no_file_points_outside_the_repository():
    offenders = []
    for path in tracked_files():
        if path.suffix in {".so", ".png", ".npz", ".onnx", ".safetensors"} or path.name == Path(__file__).name:
            continue
        text = path.read_text(errors="ignore")
        offenders += [f"{path.relative_to(ROOT)}: {name}" for name in OUTSIDE if name in text]
    assert not offenders, offenders


def test_markdown_links_resolve():
    broken = []
    for path in tracked_files():
        if path.suffix != ".md":
            continue
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", path.read_text()):
            if re.match(r"[a-z]+://|mailto:", target):
                continue
            if not (path.parent / target).exists():
                broken.append(f"{path.relative_to(ROOT)} -> {target}")
    assert not broken, broken
