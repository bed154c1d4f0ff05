"""The ``compressor`` command line: run, validate, init (and the commands of the other modules)."""

from __future__ import annotations

import os
import sys
from importlib import resources
from pathlib import Path

import click
from rich.console import Console
from rich.markup import escape

from compressor.progress import console as err_console

# Wide enough for the summary tables when stdout is a file or a pipe (rich assumes 80 columns there).
out_console = Console(width=None if sys.stdout.isatty() else 120)


def _fail(messages: list[str], code: int) -> None:
    """Print one line per problem to stderr and exit with ``code`` (no traceback)."""
    for message in messages:  # messages are plain text: a "[" in a path or value must not read as markup
        err_console.print(f"[red]error:[/red] {escape(message)}", highlight=False, markup=True, soft_wrap=True)
    sys.exit(code)


def _load(spec_path: str, overrides: tuple[str, ...]):
    from compressor.spec import SpecError, load_spec

    try:
        return load_spec(spec_path, overrides)
    except SpecError as exc:
        _fail(exc.messages, 2)


def _check_run_dir(run_dir: Path) -> None:
    """Exit 2 with one line when ``run_dir`` cannot be a run directory (a file, under /proc, ...)."""
    from compressor.spec import SpecError, check_output_dir

    try:
        check_output_dir(run_dir)
    except SpecError as exc:
        _fail(exc.messages, 2)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="compressor")
def main() -> None:
    """Train teachers on noisy labels, distil a compact robust student, certify it and export it to ONNX."""


@main.command()
@click.argument("spec_path", metavar="SPEC", type=click.Path(dir_okay=False))
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="override a spec field, e.g. seed=3")
def validate(spec_path: str, overrides: tuple[str, ...]) -> None:
    """Check SPEC and print the resolved spec (every default filled in)."""
    from compressor.spec import dump_spec

    spec = _load(spec_path, overrides)
    out_console.print(dump_spec(spec), highlight=False, markup=False)
    err_console.print(f"[green]{spec_path}: valid[/green]")


TEMPLATES = ("quickstart", "npz", "folder", "csv", "multilabel")


@main.command()
@click.option("--template", "-t", type=click.Choice(TEMPLATES), default="quickstart", show_default=True)
@click.option("--force", is_flag=True, help="overwrite PATH if it exists")
@click.argument("path", required=False, default="spec.yaml", type=click.Path(dir_okay=False))
def init(template: str, force: bool, path: str) -> None:
    """Write a commented example spec to PATH (default: spec.yaml)."""
    target = Path(path)
    if target.exists() and not force:
        _fail([f"{target} exists; use --force to overwrite it"], 1)
    text = resources.files("compressor.templates").joinpath(f"{template}.yaml").read_text()
    from compressor.io import write_text

    write_text(target, text)
    err_console.print(f"wrote {target} (template {template}); next: compressor run {target}")


@main.command()
@click.argument("spec_path", metavar="SPEC", type=click.Path(dir_okay=False))
@click.option("--out", "out_dir", type=click.Path(file_okay=False),
              help="run directory (default: the spec's output_dir)")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="override a spec field, e.g. seed=3")
@click.option("--resume", is_flag=True, help="continue an interrupted stage from its last epoch checkpoint")
@click.option("--nproc", type=click.IntRange(min=1), default=1, show_default=True,
              help="processes on this machine (torch.distributed.run; gloo on CPU, nccl on GPU)")
def run(spec_path: str, out_dir: str | None, overrides: tuple[str, ...], resume: bool, nproc: int) -> None:
    """Run SPEC end to end: data, teachers, distillation, metrics, certify, export, report.

    Several processes: --nproc N, or torchrun --nproc_per_node N -m compressor run SPEC (multi-node: add
    torchrun's --nnodes and rendezvous options; see docs/distributed.md).
    """
    spec = _load(spec_path, overrides)
    _check_run_dir(Path(out_dir) if out_dir else spec.output_dir)
    from compressor import distributed

    if nproc > 1:
        if distributed.launched_by_torchrun():
            _fail(["--nproc launches processes itself; under torchrun leave it out"], 2)
        argv = ["run", spec_path, *(["--out", out_dir] if out_dir else []),
                *(arg for key in overrides for arg in ("--set", key)), *(["--resume"] if resume else [])]
        sys.exit(distributed.launch(nproc, argv))

    from compressor.data import DataError
    from compressor.pipeline import StageError, run_pipeline
    from compressor.pipeline.context import resolve_device
    from compressor.pipeline.summary import stage_table, summary_table

    run_dir = Path(out_dir) if out_dir else spec.output_dir
    try:
        dist = distributed.init_distributed(resolve_device(spec.device))
    except (StageError, distributed.DistributedError) as exc:
        _fail([str(exc)], 1)
    if not dist.is_main:  # compute only: progress bars and the summary are rank 0's; writing is refused
        os.environ["COMPRESSOR_QUIET"] = "1"
        distributed.forbid_writes_under(run_dir, dist.rank)
    try:
        results = run_pipeline(spec, run_dir, resume=resume, dist=dist)
    except (DataError, StageError) as exc:
        _fail([str(exc)] if dist.is_main else [], 1)
    except KeyboardInterrupt:
        _fail([f"interrupted; finished stages are kept in {run_dir}; re-run with --resume to continue"], 130)
    finally:
        distributed.shutdown_distributed()
    if not dist.is_main:
        return
    out_console.print(stage_table(results))
    if (run_dir / "metrics.json").exists():
        out_console.print(summary_table(run_dir))
    out_console.print(f"run directory: {run_dir}")
    gate_failures = [line for r in results for line in r.summary.get("gate_failures", [])]  # robustness gate
    if gate_failures:
        from compressor.robustness.certificate import GATE_EXIT_CODE

        _fail(gate_failures, GATE_EXIT_CODE)


def _register_commands() -> None:
    """Attach the commands that live in their own modules (deployment, certification, benchmarks)."""
    from compressor.bench.cli import bench
    from compressor.cli_certify import certify_command, report_command
    from compressor.cli_deploy import export_command, predict_command, serve_command

    for command in (certify_command, report_command, export_command, predict_command, serve_command, bench):
        main.add_command(command)


_register_commands()
