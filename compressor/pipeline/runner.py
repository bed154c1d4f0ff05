"""Runs the stages of a spec in order, skipping those whose inputs did not change.

In a distributed run (several processes, ``compressor.distributed``) every rank calls ``run_pipeline``. Rank 0 decides
which stages are finished and tells the others; a stage marked ``distributed`` (teachers, distill) runs on every rank,
any other stage on rank 0 alone while the others wait for its outcome. Once the last distributed stage is done the
other ranks return and rank 0 runs the rest (metrics, certify, export, report) by itself. Rank 0 alone writes the
run directory: ``spec.yaml``, every artifact, every marker.

Nothing in an existing run directory changes before the new run's inputs are validated: the spec was validated
when it was loaded, and data the data stage has not yet prepared (another file, another split or noise) is loaded
and checked (``RunContext.source_data``) before ``spec.yaml`` is written.
Then what a killed earlier run left behind is tidied: an interrupted publication is completed
(``compressor.io.finish_publish``), staged and temporary files are removed. A stage whose marker is missing or
whose artifacts no longer verify runs again, and so does every stage after it that reads its outputs.
"""

from __future__ import annotations

import contextlib
import shutil
import time
from pathlib import Path

from compressor import distributed
from compressor.distributed import DistInfo
from compressor.io import finish_publish, remove_stale_temps, write_text
from compressor.pipeline.audit_stage import AUDIT_STAGE
from compressor.pipeline.certify_stage import CERTIFY_STAGE
from compressor.pipeline.context import RunContext, resolve_device
from compressor.pipeline.data_stage import DATA_STAGE
from compressor.pipeline.distill_stage import DISTILL_STAGE
from compressor.pipeline.export_stage import EXPORT_STAGE
from compressor.pipeline.metrics_stage import METRICS_STAGE
from compressor.pipeline.report_stage import REPORT_STAGE
from compressor.pipeline.stage import (
    Stage,
    StageResult,
    clear_checkpoints,
    is_done,
    mark_done,
    stage_key,
)
from compressor.pipeline.teachers_stage import TEACHERS_STAGE
from compressor.progress import console
from compressor.run_layout import RunLayout
from compressor.spec import Spec, dump_spec

STAGES: list[Stage] = [DATA_STAGE, TEACHERS_STAGE, AUDIT_STAGE, DISTILL_STAGE, METRICS_STAGE, CERTIFY_STAGE,
                       EXPORT_STAGE, REPORT_STAGE]


def stage_keys(spec: Spec, stages: list[Stage] | None = None) -> dict[str, str]:
    """The key of every enabled stage for ``spec`` (disabled stages get an empty key)."""
    keys: dict[str, str] = {}
    for stage in stages or STAGES:
        keys[stage.name] = stage_key(stage, spec, keys) if stage.enabled(spec) else ""
    return keys


def run_pipeline(
    spec: Spec, run_dir: str | Path, *, resume: bool = False, stages: list[Stage] | None = None,
    dist: DistInfo | None = None,
) -> list[StageResult]:
    """Run every enabled stage of ``spec`` into ``run_dir``; finished, unchanged stages are skipped.

    Args:
        spec: the resolved spec.
        run_dir: the run directory (written by rank 0 only).
        resume: continue interrupted training loops (teachers, distillation) from their epoch checkpoints;
            without it an interrupted stage starts over (finished teachers are kept either way).
        stages: the stages to consider (default: all of ``STAGES``).
        dist: this process's place in a distributed run (default: ``compressor.distributed.current()``).

    Returns:
        One result per stage; on ranks other than 0, only up to the last distributed stage.

    Raises:
        StageError, DataError: a stage failed for a reason the user can act on; finished stages stay finished.
    """
    dist = dist or distributed.current()
    stages = stages or STAGES
    run_dir = Path(run_dir)
    keys = stage_keys(spec, stages)
    ctx = RunContext(spec=spec, run_dir=run_dir, device=resolve_device(spec.device, dist), resume=resume,
                     keys=keys, dist=dist)
    data = next((s for s in stages if s.name == DATA_STAGE.name and s.enabled(spec)), None)
    if data is not None and is_done(data, ctx, keys[data.name]) is None:
        ctx.source_data()  # the data stage will run: its input is checked (DataError) before anything changes
    if dist.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        tidy_run_dir(RunLayout(run_dir))
        write_text(RunLayout(run_dir).spec, dump_spec(spec))
    # position of the last enabled stage every rank takes part in (-1 in a single process or when none is)
    shared = [i for i, s in enumerate(stages) if s.distributed and s.enabled(spec)] if dist.enabled else []
    shared_until = max(shared, default=-1)
    results = []
    reran: set[str] = set()  # stages that ran in this call: what reads their outputs runs again too
    for position, stage in enumerate(stages):
        together = position <= shared_until  # every rank takes part in this stage's decision
        if not (dist.is_main or together):
            break  # the rest is rank 0's alone
        if not stage.enabled(spec):
            results.append(StageResult(stage.name, "disabled"))
            continue
        key = keys[stage.name]
        stale_inputs = any(name in reran for name in stage.after)
        done = is_done(stage, ctx, key) if dist.is_main and not stale_inputs else None
        if together:
            done = distributed.broadcast_object(done)
        if done is not None:
            if dist.is_main:
                console.print(f"[dim]- {stage.name}: unchanged, skipped[/dim]")
            results.append(StageResult(stage.name, "skipped", 0.0, done))
            continue
        if dist.is_main:
            console.print(f"[bold]> {stage.name}[/bold]")
            # forget its completion first, so that an interrupted re-run is never taken as finished
            ctx.layout.stage_marker(stage.name).unlink(missing_ok=True)
        ctx.stage = stage.name
        start = time.perf_counter()
        main_only = together and not stage.distributed  # rank 0 runs it, the other ranks wait for its outcome
        summary = ctx.on_main(f"stage {stage.name}", stage.run, ctx) if main_only else stage.run(ctx)
        seconds = round(time.perf_counter() - start, 2)
        reran.add(stage.name)
        if dist.is_main:
            mark_done(stage, ctx, key, seconds, summary)
            clear_checkpoints(stage, ctx)
        results.append(StageResult(stage.name, "ran", seconds, summary))
    return results


def tidy_run_dir(layout: RunLayout) -> None:
    """Undo what a killed run left half done: finish interrupted publications, drop staged and temporary files."""
    if layout.publish_root.is_dir():
        for journal in sorted(layout.publish_root.glob("*.json")):
            finish_publish(journal)
        with contextlib.suppress(OSError):  # a journal this code did not write: left alone
            layout.publish_root.rmdir()
    shutil.rmtree(layout.staging_root, ignore_errors=True)
    remove_stale_temps(layout.root, recursive=False)  # the root may hold the user's own files: only the run's folders
    for folder in layout.folders():
        remove_stale_temps(folder)
