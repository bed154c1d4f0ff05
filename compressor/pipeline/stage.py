"""Stages of a run: each declares the spec sections and upstream stages it depends on.

A stage's key is a hash of those sections, the upstream keys and any extra input (e.g. the data fingerprint).
After a stage finishes, a marker with its key and the SHA-256 of every artifact it wrote is written atomically
(after its artifacts); a re-run skips a stage whose marker key matches and whose artifacts all still hash to the
recorded values (a truncated, edited or missing file re-runs the stage). Changing a section therefore re-runs the
stages that read it and every stage downstream of them, and nothing else.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from compressor.io import read_json, sha256_file, write_json
from compressor.pipeline.context import RunContext
from compressor.run_layout import RunLayout
from compressor.spec import Spec

STAGE_FORMAT = 2  # bump when an artifact's format changes, so old run directories are recomputed
LAYOUT = RunLayout()  # paths relative to the run directory, as stages name their outputs
# Spec fields that change how a stage computes, never what: they are left out of every stage's key (as the fields
# in a stage's own ``ignores`` are left out of its key), so that e.g. more DataLoader workers retrain nothing
# (streamed or in-memory data and any worker count give the same run). Export still re-runs: its key and the ONNX
# metadata hold the hash of the whole resolved spec.
HOW_NOT_WHAT = ("data.load", "data.workers")


@dataclass(frozen=True)
class Stage:
    """One step of the pipeline.

    Attributes:
        name: stage name (also its marker file name).
        sections: spec fields the stage reads (``"data"``, ``"seed"``, or one field such as ``"data.label_issues"``).
        after: upstream stages whose outputs it reads.
        run: does the work, writes the outputs atomically and returns a JSON-able summary.
        outputs: files that must exist for the stage to count as done (relative to the run directory: paths of
            ``RunLayout()``); their hashes go into the marker.
        optional_outputs: files the stage may or may not write (e.g. the int8 model behind its gate); those present
            when it finishes are hashed into the marker too.
        extra_key: more inputs to hash (e.g. the data fingerprint).
        enabled: whether the stage runs for this spec.
        ignores: fields inside ``sections`` the stage does not read (e.g. ``"data.label_issues"``, read only by
            distillation), left out of its key so that changing them does not re-run it.
        distributed: in a multi-process run, every rank runs it (it splits the work and rank 0 writes the results);
            otherwise rank 0 runs it alone.
    """

    name: str
    sections: tuple[str, ...]
    after: tuple[str, ...]
    run: Callable[[RunContext], dict]
    outputs: Callable[[Spec], list[Path]] = lambda spec: []
    optional_outputs: Callable[[Spec], list[Path]] = lambda spec: []
    extra_key: Callable[[Spec], str] = lambda spec: ""
    enabled: Callable[[Spec], bool] = lambda spec: True
    distributed: bool = False
    ignores: tuple[str, ...] = ()


@dataclass
class StageResult:
    """How a stage went: ``ran`` or ``skipped``, in how many seconds, with its summary."""

    name: str
    status: str
    seconds: float = 0.0
    summary: dict = field(default_factory=dict)


def _spec_field(dump: dict, dotted: str):
    value = dump
    for part in dotted.split("."):
        value = value[part]
    return value


def _spec_part(stage: Stage, spec: Spec) -> dict:
    """The values of the spec fields the stage reads: its sections less ``HOW_NOT_WHAT`` and the fields it ignores."""
    dump = spec.model_dump(mode="json")
    for dotted in HOW_NOT_WHAT + stage.ignores:
        parent, _, last = dotted.rpartition(".")
        (_spec_field(dump, parent) if parent else dump).pop(last, None)
    return {name: _spec_field(dump, name) for name in stage.sections}


def stage_key(stage: Stage, spec: Spec, upstream: dict[str, str]) -> str:
    """Hash of everything the stage's result depends on."""
    payload = {
        "format": STAGE_FORMAT,
        "stage": stage.name,
        "spec": _spec_part(stage, spec),
        "upstream": {name: upstream.get(name, "") for name in stage.after},
        "extra": stage.extra_key(spec),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def verify_artifacts(run_dir: Path, recorded: dict[str, str]) -> list[str]:
    """The recorded artifacts that are missing or no longer hash to their recorded value (empty: all intact)."""
    bad = []
    for relative, digest in recorded.items():
        path = Path(run_dir) / relative
        try:
            if sha256_file(path) != digest:
                bad.append(relative)
        except OSError:  # missing or unreadable
            bad.append(relative)
    return bad


def is_done(stage: Stage, ctx: RunContext, key: str) -> dict | None:
    """The stored summary when the stage finished with this key and every artifact it recorded is intact, else None."""
    try:
        record = read_json(ctx.layout.stage_marker(stage.name))
    except (OSError, ValueError):  # never finished, or an unreadable marker
        return None
    if not isinstance(record, dict) or record.get("key") != key or not isinstance(record.get("artifacts"), dict):
        return None
    recorded = record["artifacts"]
    complete = all(Path(p).as_posix() in recorded for p in stage.outputs(ctx.spec))
    return record.get("summary", {}) if complete and not verify_artifacts(ctx.run_dir, recorded) else None


def mark_done(stage: Stage, ctx: RunContext, key: str, seconds: float, summary: dict) -> None:
    """Write the completion marker with every artifact's hash (after every output has been written): the stage's
    outputs and those of its optional outputs that exist, by path relative to the run directory."""
    required = [Path(p) for p in stage.outputs(ctx.spec)]
    present = [Path(p) for p in stage.optional_outputs(ctx.spec) if (ctx.run_dir / p).is_file()]
    artifacts = {p.as_posix(): sha256_file(ctx.run_dir / p) for p in required + present}
    write_json(ctx.layout.stage_marker(stage.name),
               {"key": key, "seconds": seconds, "artifacts": artifacts, "summary": summary})


def clear_checkpoints(stage: Stage, ctx: RunContext) -> None:
    """Remove a finished stage's epoch checkpoints (after its marker: until then they may still be resumed from)."""
    shutil.rmtree(ctx.layout.checkpoints / stage.name, ignore_errors=True)
    with contextlib.suppress(OSError):
        ctx.layout.checkpoints.rmdir()  # the checkpoints folder itself, once no stage has any left
