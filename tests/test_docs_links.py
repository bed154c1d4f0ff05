"""The repository explains itself: every document, file and link it names resolves inside it."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BINARY = {".so", ".png", ".npz", ".onnx", ".safetensors", ".pt", ".npy"}
# A repository-level document is named in capitals, like the README: each one named must be in the repository.
DOCUMENT = re.compile(r"\b[A-Z][A-Z_]+\.md\b")
# A path relative to the file that names it that climbs up a folder or more; a URL's path is not one.
CLIMBING = re.compile(r"(?<![\w./])((?:\.\./)+[\w.-][\w./-]*)")
# An absolute path to a markdown or PDF document; neither a URL's path nor a scratch file a command writes in /tmp.
ABSOLUTE_DOCUMENT = re.compile(r"(?<![\w.:/~-])/(?!tmp/)(?:[\w.-]+/)+[\w.-]+\.(?:md|pdf)\b")


def tracked_files() -> list[Path]:
    """The repository's files: git's list when it is a checkout, else every file under the root but .venv/runs."""
    try:
        names = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
        return [ROOT / name for name in names.splitlines() if (ROOT / name).is_file()]
    except (OSError, subprocess.CalledProcessError):
        skip = {".venv", "runs", ".git", "build"}
        return [p for p in ROOT.rglob("*") if p.is_file() and not skip & set(p.relative_to(ROOT).parts)]


def text_files() -> list[tuple[Path, str]]:
    """``(path, text)`` of every tracked file that is not binary."""
    return [(path, path.read_text(errors="ignore")) for path in tracked_files() if path.suffix not in BINARY]


def inside(path: Path) -> bool:
    """Whether ``path`` exists inside the repository."""
    resolved = path.resolve()
    return resolved.exists() and (resolved == ROOT or ROOT in resolved.parents)


def test_every_document_named_is_in_the_repository():
    present = {path.name for path in tracked_files()}
    missing = [f"{path.relative_to(ROOT)}: {name}" for path, text in text_files()
               for name in set(DOCUMENT.findall(text)) if name not in present]
    assert not missing, missing


def test_no_relative_path_leaves_the_repository():
    outside = [f"{path.relative_to(ROOT)}: {target}" for path, text in text_files()
               for target in set(CLIMBING.findall(text)) if not inside(path.parent / target.rstrip("."))]
    assert not outside, outside


def test_no_absolute_path_to_a_document():
    found = [f"{path.relative_to(ROOT)}: {target}" for path, text in text_files()
             for target in set(ABSOLUTE_DOCUMENT.findall(text))]
    assert not found, found


def test_markdown_links_resolve():
    broken = []
    for path, text in text_files():
        if path.suffix != ".md":
            continue
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text):
            if re.match(r"[a-z]+://|mailto:", target):
                continue
            if not (path.parent / target).exists():
                broken.append(f"{path.relative_to(ROOT)} -> {target}")
    assert not broken, broken
