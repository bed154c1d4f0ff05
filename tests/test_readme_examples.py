"""The README's Python examples run as written, in order, in one namespace (as a reader would paste them)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from compressor.models import registry

ROOT = Path(__file__).resolve().parent.parent


def python_blocks(markdown: str, section: str) -> list[str]:
    """The fenced ``python`` blocks of one ``## section`` of a markdown text."""
    body = markdown.split(f"## {section}\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", body, flags=re.S)


@pytest.mark.slow
def test_the_python_api_examples_run(tmp_path, monkeypatch, capsys):
    blocks = python_blocks((ROOT / "README.md").read_text(), "Python API")
    assert len(blocks) >= 4
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))  # the example's model stays in this test
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, "README.md", "exec"), namespace)
    result = namespace["result"]
    assert result.stages["distill"] == "ran" and result.stages["certify"] == "disabled"
    assert 0.0 <= result.metrics["test"]["student"]["accuracy"] <= 1.0
    assert result.onnx_path == tmp_path / "runs" / "python-api" / "student.onnx"
    assert namespace["averaged"][0].eq(0.25).all()
    assert namespace["student"].grad is not None
    printed = capsys.readouterr().out
    assert "temperature" in printed  # the SpecError names the bad field
