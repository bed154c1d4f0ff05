"""Killing ``compressor run`` at random moments: the run, the kill and the checks of the run directory.

Shared by ``tests/test_kill_resume.py`` (a few kills) and ``benchmarks/kill_resume.py`` (20 and more). A run is a
child process (``python -m compressor run SPEC --out DIR --resume``) killed with SIGKILL after a delay; what it left
must be consistent at any moment (``problems_any_moment``), and once a later run finishes, complete and equal to an
uninterrupted run (``problems_finished``).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

from compressor.io import TEMP_PATTERN, read_json, sha256_file
from compressor.pipeline.runner import STAGES
from compressor.pipeline.stage import verify_artifacts
from compressor.run_layout import RunLayout
from compressor.spec import parse_spec
from tests.synthetic import fast_spec

ENV = {**os.environ, "COMPRESSOR_QUIET": "1", "OMP_NUM_THREADS": "1"}
STAGE_LINE = re.compile(r"^> (\w+)", re.MULTILINE)


def kill_spec(seed: int = 0) -> dict:
    """A tiny spec whose every stage takes seconds: two teachers, a student, ONNX with an int8 model, a report."""
    train = {"epochs": 2, "batch_size": 64, "optimizer": {"name": "sgd", "lr": 0.05}, "schedule": {"name": "cosine"}}
    return fast_spec(seed=seed, teachers={"training": train}, distillation={"training": train},
                     export={"quantize": {"enabled": True, "mode": "dynamic", "max_accuracy_drop": 1.0}})


def write_spec(path: Path, seed: int = 0) -> Path:
    """Write ``kill_spec(seed)`` as YAML at ``path``."""
    path.write_text(yaml.safe_dump(kill_spec(seed)))
    return path


def start_run(spec_file: Path, run_dir: Path, log: Path) -> subprocess.Popen:
    """``compressor run SPEC --out RUN_DIR --resume`` as a child process, its stderr (stage lines) in ``log``."""
    command = [sys.executable, "-m", "compressor", "run", str(spec_file), "--out", str(run_dir), "--resume"]
    with open(log, "w") as handle:
        return subprocess.Popen(command, env=ENV, stdout=subprocess.DEVNULL, stderr=handle)


def kill_after(proc: subprocess.Popen, delay: float) -> bool:
    """SIGKILL ``proc`` ``delay`` seconds from now; False when it had already exited by then."""
    deadline = time.monotonic() + delay
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        time.sleep(0.01)
    if proc.poll() is not None:
        return False
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    return True


def stage_in_progress(log: Path) -> str:
    """The stage a run was in when it stopped (its last ``> stage`` line), ``start-up`` before the first."""
    found = STAGE_LINE.findall(log.read_text(errors="replace")) if log.exists() else []
    return found[-1] if found else "start-up"


def onnx_spec_hashes(run_dir: Path) -> dict[str, str]:
    """File name -> the ``spec_hash`` in its metadata, for every ONNX model at the top of the run directory."""
    import onnx

    hashes = {}
    for path in sorted(Path(run_dir).glob("*.onnx")):
        props = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
        hashes[path.name] = props.get("spec_hash", "")
    return hashes


def problems_any_moment(run_dir: Path) -> list[str]:
    """What must hold whenever a run stops, killed or not.

    Every stage marker's artifacts hash to what the marker recorded; the ONNX models at the top of the run directory
    all come from one export (one spec hash in their metadata); when ``export.json`` is present, it lists exactly
    those models with their hashes.
    """
    layout, problems = RunLayout(run_dir), []
    for stage in STAGES:
        marker = layout.stage_marker(stage.name)
        if marker.exists():
            bad = verify_artifacts(run_dir, read_json(marker).get("artifacts", {}))
            if bad:
                problems.append(f"marker {stage.name}: artifacts changed since it was written: {bad}")
    models = onnx_spec_hashes(run_dir)
    if len(set(models.values())) > 1:
        problems.append(f"ONNX models of different exports side by side: {models}")
    if layout.export_report.exists():
        listed = read_json(layout.export_report).get("sha256", {})
        if set(listed) != set(models):
            problems.append(f"export.json lists {sorted(listed)} but the run directory holds {sorted(models)}")
        for name, digest in listed.items():
            if name in models and sha256_file(Path(run_dir) / name) != digest:
                problems.append(f"{name} is not the model export.json describes")
    return problems


def problems_finished(run_dir: Path, spec_file: Path, reference: Path | None = None) -> list[str]:
    """What must hold once a run exited 0: ``problems_any_moment``, every enabled stage marked done, nothing left
    of a killed run (temporary files, staging, journals, epoch checkpoints) and, given an uninterrupted run of the
    same spec, the same bytes in every weights file."""
    layout, problems = RunLayout(run_dir), problems_any_moment(run_dir)
    spec = parse_spec(yaml.safe_load(spec_file.read_text()))
    for stage in STAGES:
        if stage.enabled(spec) and not layout.stage_marker(stage.name).exists():
            problems.append(f"stage {stage.name} has no marker")
    leftovers = [p for p in Path(run_dir).rglob(TEMP_PATTERN)]
    leftovers += [p for p in (layout.staging_root, layout.publish_root, layout.checkpoints) if p.exists()]
    if leftovers:
        problems.append(f"left over: {[str(p.relative_to(run_dir)) for p in leftovers]}")
    if reference is not None:
        weights = sorted(p.relative_to(reference) for p in Path(reference).rglob("*.safetensors"))
        for rel in weights:
            mine = Path(run_dir) / rel
            if not mine.exists() or sha256_file(mine) != sha256_file(Path(reference) / rel):
                problems.append(f"{rel} differs from the uninterrupted run's")
    return problems
