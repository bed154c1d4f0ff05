"""Runs the stages of a spec in order, skipping those whose inputs did not change."""

from __future__ import annotations

import time
from pathlib import Path

from compressor.io import write_text
from compressor.pipeline.certify_stage import CERTIFY_STAGE
from compressor.pipeline.context import RunContext, resolve_device
from compressor.pipeline.data_stage import DATA_STAGE
from compressor.pipeline.distill_stage import DISTILL_STAGE
from compressor.pipeline.export_stage import EXPORT_STAGE
from compressor.pipeline.metrics_stage import METRICS_STAGE
from compressor.pipeline.report_stage import REPORT_STAGE
from compressor.pipeline.stage import Stage, StageResult, clear_marker, is_done, mark_done, stage_key
from compressor.pipeline.teachers_stage import TEACHERS_STAGE
from compressor.progress import console
from compressor.spec import Spec, dump_spec

STAGES: list[Stage] = [DATA_STAGE, TEACHERS_STAGE, DISTILL_STAGE, METRICS_STAGE, CERTIFY_STAGE, EXPORT_STAGE,
                       REPORT_STAGE]


def stage_keys(spec: Spec, stages: list[Stage] | None = None) -> dict[str, str]:
    """The key of every enabled stage for ``spec`` (disabled stages get an empty key)."""
    keys: dict[str, str] = {}
    for stage in stages or STAGES:
        keys[stage.name] = stage_key(stage, spec, keys) if stage.enabled(spec) else ""
    return keys


def run_pipeline(spec: Spec, run_dir: str | Path, *, resume: bool = False, stages: list[Stage] | None = None) -> list[StageResult]:
    """Run every enabled stage of ``spec`` into ``run_dir``; finished, unchanged stages are skipped.

    Raises:
        StageError, DataError: a stage failed for a reason the user can act on; finished stages stay finished.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    write_text(run_dir / "spec.yaml", dump_spec(spec))
    ctx = RunContext(spec=spec, run_dir=run_dir, device=resolve_device(spec.device), resume=resume)
    keys = stage_keys(spec, stages)
    results = []
    for stage in stages or STAGES:
        if not stage.enabled(spec):
            results.append(StageResult(stage.name, "disabled"))
            continue
        key = keys[stage.name]
        summary = is_done(stage, ctx, key)
        if summary is not None:
            console.print(f"[dim]- {stage.name}: unchanged, skipped[/dim]")
            results.append(StageResult(stage.name, "skipped", 0.0, summary))
            continue
        console.print(f"[bold]> {stage.name}[/bold]")
        clear_marker(stage, ctx)
        ctx.current_key = key
        start = time.perf_counter()
        summary = stage.run(ctx)
        seconds = round(time.perf_counter() - start, 2)
        mark_done(stage, ctx, key, seconds, summary)
        results.append(StageResult(stage.name, "ran", seconds, summary))
    return results
