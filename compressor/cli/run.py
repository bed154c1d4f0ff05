"""``compressor run`` (the pipeline, on one or several processes), ``compressor validate`` and ``compressor init``."""

from __future__ import annotations

import os
import sys
from importlib import resources
from pathlib import Path

import click

from compressor.cli.common import check_tracking, fail, load, out_console
from compressor.cli.errors import log_into
from compressor.progress import console as err_console
from compressor.run_layout import RunLayout


@click.command("validate")
@click.argument("spec_path", metavar="SPEC", type=click.Path(dir_okay=False))
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="override a spec field, e.g. seed=3")
def validate_command(spec_path: str, overrides: tuple[str, ...]) -> None:
    """Check SPEC and print the resolved spec (every default filled in)."""
    from compressor.spec import dump_spec

    spec = load(spec_path, overrides)
    check_tracking(spec)
    out_console.print(dump_spec(spec), highlight=False, markup=False)
    err_console.print(f"[green]{spec_path}: valid[/green]")


TEMPLATES = ("quickstart", "npz", "folder", "csv", "multilabel")


@click.command("init")
@click.option("--template", "-t", type=click.Choice(TEMPLATES), default="quickstart", show_default=True)
@click.option("--force", is_flag=True, help="overwrite PATH if it exists")
@click.argument("path", required=False, default="spec.yaml", type=click.Path(dir_okay=False))
def init_command(template: str, force: bool, path: str) -> None:
    """Write a commented example spec to PATH (default: spec.yaml)."""
    target = Path(path)
    if target.exists() and not force:
        fail([f"{target} exists; use --force to overwrite it"], 2)
    text = resources.files("compressor.templates").joinpath(f"{template}.yaml").read_text()
    from compressor.io import write_text

    write_text(target, text)
    err_console.print(f"wrote {target} (template {template}); next: compressor run {target}")


@click.command("run")
@click.argument("spec_path", metavar="SPEC", type=click.Path(dir_okay=False))
@click.option("--out", "out_dir", type=click.Path(file_okay=False),
              help="run directory (default: the spec's output_dir)")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="override a spec field, e.g. seed=3")
@click.option("--resume", is_flag=True, help="continue an interrupted stage from its last epoch checkpoint")
@click.option("--nproc", type=click.IntRange(min=1), default=1, show_default=True,
              help="processes on this machine (torch.distributed.run; gloo on CPU, nccl on GPU)")
def run_command(spec_path: str, out_dir: str | None, overrides: tuple[str, ...], resume: bool, nproc: int) -> None:
    """Run SPEC end to end: data, teachers, distillation, metrics, certify, export, report.

    Several processes: --nproc N, or torchrun --nproc_per_node N -m compressor run SPEC (multi-node: add
    torchrun's --nnodes and rendezvous options; see docs/distributed.md).
    """
    spec = load(spec_path, overrides)
    check_tracking(spec)
    run_dir = Path(out_dir) if out_dir else spec.output_dir
    from compressor import distributed
    from compressor.spec import SpecError, check_output_dir

    try:
        check_output_dir(run_dir)
    except SpecError as exc:
        fail(exc.messages, 2)
    if nproc > 1:
        if distributed.launched_by_torchrun():
            fail(["--nproc launches processes itself; under torchrun leave it out"], 2)
        argv = ["run", spec_path, *(["--out", out_dir] if out_dir else []),
                *(arg for key in overrides for arg in ("--set", key)), *(["--resume"] if resume else [])]
        sys.exit(distributed.launch(nproc, argv))

    from compressor.data import DataError
    from compressor.pipeline import StageError, run_pipeline
    from compressor.pipeline.context import resolve_device
    from compressor.pipeline.summary import stage_table, summary_table
    from compressor.robustness.certificate import GATE_EXIT_CODE

    try:
        dist = distributed.init_distributed(resolve_device(spec.device))
    except (StageError, distributed.DistributedError) as exc:  # a device or process count this machine lacks
        fail([str(exc)], 2)
    if not dist.is_main:  # compute only: progress bars and the summary are rank 0's; writing is refused
        os.environ["COMPRESSOR_QUIET"] = "1"
        distributed.forbid_writes_under(run_dir, dist.rank)
    if dist.is_main:
        log_into(run_dir)  # an internal error from here on logs its traceback in <run_dir>/logs/error.log
    try:
        results = run_pipeline(spec, run_dir, resume=resume, dist=dist)
    except (DataError, StageError) as exc:  # bad input (2), or a quality check such as ONNX parity (3)
        fail([str(exc)] if dist.is_main else [], getattr(exc, "exit_code", 2))
    except KeyboardInterrupt:
        fail([f"interrupted; finished stages are kept in {run_dir}; re-run with --resume to continue"], 130)
    finally:
        distributed.shutdown_distributed()
    if not dist.is_main:
        return
    out_console.print(stage_table(results))
    if RunLayout(run_dir).metrics.exists():
        out_console.print(summary_table(run_dir))
    out_console.print(f"run directory: {run_dir}")
    gate_failures = [line for r in results for line in r.summary.get("gate_failures", [])]  # robustness gate
    if gate_failures:
        fail(gate_failures, GATE_EXIT_CODE)
