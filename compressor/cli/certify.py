"""``compressor certify`` (robustness certificate of one model, with its gate) and ``compressor report``."""

from __future__ import annotations

from pathlib import Path

import click
from rich.table import Table

from compressor.cli.common import fail, load, out_console
from compressor.progress import console as err_console
from compressor.run_layout import RunLayout


def certificate_table(certificate: dict) -> Table:
    """The certificate's headline figures: clean accuracy, attacks, mCA, certified accuracy and the gate."""
    from compressor.report.build import eps_label, fmt

    results = certificate["results"]
    table = Table(title=f"certificate: {certificate['model']['name']} ({certificate['model']['sha256'][:12]})",
                  title_justify="left")
    table.add_column("figure")
    table.add_column("value", justify="right")
    table.add_row("clean accuracy", fmt(results["clean"]["accuracy"]))
    for norm, methods in (results.get("attacks") or {}).items():
        for method, entries in methods.items():
            for e in entries:
                table.add_row(f"{method.upper()} {norm} eps={eps_label(e['eps'])} accuracy", fmt(e["accuracy"]))
    if results.get("corruptions"):
        table.add_row("mean corruption accuracy (mCA)", fmt(results["corruptions"]["mca"]))
    if results.get("smoothing"):
        s = results["smoothing"]
        for entry in s["certified_accuracy"]:
            table.add_row(f"certified accuracy, L2 radius {entry['radius']:g} (sigma {s['sigma']:g})",
                          fmt(entry["accuracy"]))
        table.add_row("smoothed classifier abstains", fmt(s["abstain_rate"]))
    for check in certificate["gate"]["checks"]:
        table.add_row(f"gate {check['name']} >= {check['threshold']:g}", "PASS" if check["passed"] else "FAIL")
    return table


@click.command("certify")
@click.argument("model", type=click.Path(exists=True))
@click.option("--spec", "spec_path", type=click.Path(dir_okay=False),
              help="spec giving the data and the robustness section (default for a run directory: its spec.yaml)")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="override a spec field")
@click.option("--out", "out_file", type=click.Path(dir_okay=False), default=str(RunLayout().certificate),
              show_default=True, help="where to write the certificate")
def certify_command(model: str, spec_path: str | None, overrides: tuple[str, ...], out_file: str) -> None:
    """Certify MODEL (a student .safetensors checkpoint, or a run directory's final student) on the spec's test
    data: clean metrics, FGSM/PGD, corruptions, randomized smoothing. Exits 3 when a gate threshold fails."""
    from compressor.checkpoint import CheckpointError, read_info
    from compressor.data import DataError, fingerprint, prepare_data
    from compressor.io import write_json
    from compressor.pipeline.context import StageError, resolve_device
    from compressor.robustness.certificate import GATE_EXIT_CODE, build_certificate, failure_messages
    from compressor.robustness.checkpoints import CheckpointMismatch, certify_checkpoint
    from compressor.robustness.evaluate import select_data

    target = Path(model)
    checkpoint = RunLayout(target).final_student if target.is_dir() else target
    if spec_path is None:
        if not target.is_dir():
            fail([f"{model}: a checkpoint needs --spec SPEC (the data to certify it on)"], 2)
        spec_path = str(RunLayout(target).spec)
    if not checkpoint.is_file():
        fail([f"{checkpoint}: no such checkpoint (a run directory must hold {checkpoint.name})"], 2)
    try:
        read_info(checkpoint)
    except (OSError, ValueError) as exc:  # the message names the file
        fail([str(exc)], 2)
    spec = load(spec_path, overrides)
    try:
        device = resolve_device(spec.device)
        bundle = prepare_data(spec)
        data = select_data(bundle.test, bundle.train, bundle.task, spec.robustness, spec.seed)
        record = certify_checkpoint(checkpoint.stem, checkpoint, data, bundle.num_classes, spec.robustness,
                                    seed=spec.seed, device=device, smoothing=True,
                                    landscape=spec.robustness.landscape.enabled)
    except (DataError, StageError) as exc:
        fail([str(exc)], getattr(exc, "exit_code", 2))
    except CheckpointMismatch as exc:
        fail([f"{checkpoint} does not fit the spec's data: {exc}"], 2)
    except CheckpointError as exc:  # the checkpoint's tensors do not load (truncated, another architecture)
        fail([str(exc)], 2)
    certificate = build_certificate(
        record, [], spec.robustness, seed=spec.seed,
        data={"source": spec.data.source, "fingerprint": fingerprint(spec), "split": "test",
              "test_samples": len(bundle.test)},
    )
    write_json(out_file, certificate)
    out_console.print(certificate_table(certificate))
    out_console.print(f"certificate: {out_file}")
    failures = failure_messages(certificate["gate"])
    if failures:
        fail(failures, GATE_EXIT_CODE)


@click.command("report")
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False))
def report_command(run_dir: str) -> None:
    """Regenerate report.md, report.html and plots/*.png of RUN_DIR from its artifacts."""
    from compressor.pipeline.context import RunContext, StageError, resolve_device
    from compressor.pipeline.report_stage import generate_report

    root, layout = Path(run_dir), RunLayout(run_dir)
    missing = [layout.relative(path) for path in (layout.spec, layout.metrics) if not path.exists()]
    if missing:
        fail([f"{root}: not a finished run directory (missing {', '.join(missing)})"], 2)
    spec = load(str(layout.spec))
    try:
        # "auto", not the spec's device: a run trained on a GPU can be reported on a machine without one.
        ctx = RunContext(spec=spec, run_dir=root, device=resolve_device("auto"))
        written = generate_report(ctx, data_optional=True)
    except (StageError, OSError, KeyError, ValueError) as exc:
        fail([f"{root}: cannot write the report ({exc.__class__.__name__}: {exc})"], 2)
    err_console.print(f"wrote {', '.join(str(root / p) for p in written['report'])} and "
                      f"{len(written['plots'])} plots in {layout.plots}")
