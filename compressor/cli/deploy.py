"""Deployment commands: ``compressor export``, ``compressor predict`` and ``compressor serve``.

Heavy modules (PyTorch, onnxruntime, FastAPI) are imported inside the commands, so ``compressor --help`` stays fast.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from compressor.cli.common import fail, load, out_console
from compressor.run_layout import RunLayout

INT8_CHOICES = ("static", "dynamic", "none")
ARRAY_SUFFIXES = {".npy"}


def _run_dir_of(checkpoint: Path) -> Path | None:
    """The run directory a checkpoint belongs to (the final student, or a teacher or student file one level down)."""
    for folder in (checkpoint.parent, checkpoint.parent.parent):
        if RunLayout(folder).is_run():
            return folder
    return None


def _context(run_dir: Path | None, spec_path: Path | None):
    """A ``RunContext`` giving the data of a run (or of ``--spec``), or None when there is no data."""
    from compressor.pipeline.context import RunContext

    source = spec_path or (RunLayout(run_dir).spec if run_dir else None)
    if source is None:
        return None
    spec = load(str(source))
    import torch

    return RunContext(spec=spec, run_dir=run_dir or Path(source).parent / ".no-run", device=torch.device("cpu"))


def _print_report(report: dict, out: Path, report_path: Path) -> None:
    from compressor.pipeline.export_stage import say_int8

    parity = report["parity"]
    accuracy = "" if parity["accuracy_onnx"] is None else f", accuracy {parity['accuracy_onnx']:.4f}"
    out_console.print(f"wrote {out} ({out.stat().st_size:,} bytes, opset {report['opset']}): parity on "
                      f"{parity['samples']} images ({parity['images']}): max |logit diff| "
                      f"{parity['max_abs_diff']:.2e}, agreement {parity['agreement']:.4f}{accuracy}",
                      highlight=False, soft_wrap=True)
    say_int8(report.get("int8"))
    out_console.print(f"report: {report_path}", highlight=False)


@click.command("export")
@click.argument("source", metavar="RUN_DIR|CHECKPOINT", type=click.Path(exists=True, path_type=Path))
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path),
              help="ONNX file to write [default: RUN_DIR/deploy/student.onnx or <checkpoint dir>/deploy/<name>.onnx]")
@click.option("--int8", "int8", type=click.Choice(INT8_CHOICES),
              help="int8 quantization mode [default: the spec's export.quantize]")
@click.option("--max-accuracy-drop", type=click.FloatRange(0.0, 1.0),
              help="int8 accuracy gate: largest accepted validation-accuracy drop vs fp32 [default: the spec's]")
@click.option("--opset", type=click.IntRange(17, 23), help="ONNX opset [default: the spec's export.opset]")
@click.option("--spec", "spec_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="spec whose data gives validation and calibration images, for a checkpoint outside a run directory")
def export_command(source: Path, out: Path | None, int8: str | None, max_accuracy_drop: float | None,
                   opset: int | None, spec_path: Path | None) -> None:
    """Export a run's student (RUN_DIR) or a checkpoint (.safetensors) to ONNX with metadata, optionally int8.

    Parity with PyTorch is measured on the run's validation split (random probe images for a checkpoint without
    data); int8 models pass the accuracy gate on the validation split or are kept as *.int8.rejected.onnx with the
    reason. The test split is never used to decide.
    """
    from compressor.checkpoint import CheckpointError, load_classifier, read_info
    from compressor.data import DataError
    from compressor.export.checked_export import export_checked, parity_failure
    from compressor.pipeline.export_stage import export_run, publish_export

    if source.is_dir():
        layout = RunLayout(source)
        checkpoint, run_dir = layout.final_student, source
        if not layout.spec.is_file() or not checkpoint.is_file():
            fail([f"{source}: not a finished run directory (needs {layout.relative(layout.spec)} and "
                  f"{layout.relative(checkpoint)})"], 2)
    else:
        checkpoint, run_dir = source, _run_dir_of(source)
    try:
        info = read_info(checkpoint)
    except (OSError, ValueError) as exc:  # the message names the file
        fail([str(exc)], 2)
    # default: <run>/deploy/student.onnx for a run directory, <dir>/deploy/<stem>.onnx for a checkpoint
    out = out or RunLayout(source if source.is_dir() else checkpoint.parent).deploy_onnx(checkpoint.stem)
    ctx = _context(run_dir, spec_path)
    if ctx is None:
        if int8 not in (None, "none"):
            fail([f"--int8 {int8} needs calibration and validation images: export a run directory, a checkpoint "
                  "inside one, or pass --spec SPEC"], 2)

        def produce(staged: Path) -> dict:
            return {"source": str(checkpoint), **export_checked(*load_classifier(checkpoint, "cpu"), staged,
                                                                opset=opset or 18), "int8": None}
    else:
        try:
            bundle = ctx.bundle()
        except DataError as exc:
            fail([str(exc), "export a checkpoint without --spec to skip the data (no int8, random parity probes)"], 2)
        if (bundle.channels, bundle.image_size, bundle.num_classes) != (info.in_channels, info.image_size,
                                                                         info.num_classes):
            fail([f"{checkpoint}: model takes {info.in_channels}x{info.image_size}x{info.image_size} images with "
                   f"{info.num_classes} classes, but the data has {bundle.channels}x{bundle.image_size}x"
                   f"{bundle.image_size} with {bundle.num_classes}"], 2)
        quantize = ctx.spec.export.quantize
        if int8 is not None:
            quantize = quantize.model_copy(update={"enabled": int8 != "none",
                                                   "mode": quantize.mode if int8 == "none" else int8})
        if max_accuracy_drop is not None:
            quantize = quantize.model_copy(update={"max_accuracy_drop": max_accuracy_drop})

        def produce(staged: Path) -> dict:
            return {"source": str(checkpoint), **export_run(ctx, staged, quantize, checkpoint, opset)}
    report_path = out.with_name(f"{out.name.removesuffix('.onnx')}.export.json")
    try:  # the models and the report published as one unit (a kill never leaves two models' files side by side)
        report = publish_export(produce, out, report_path, out.with_name(f".{out.name}.staging"),
                                out.with_name(f".{out.name}.publish.json"))
    except CheckpointError as exc:  # the checkpoint's tensors do not load (truncated, another architecture)
        fail([str(exc)], 2)
    if not report["parity"]["passed"]:
        fail([parity_failure(report["parity"]), f"details: {report_path}"], 3)  # the export's quality check
    _print_report(report, out, report_path)


def _expand(paths: tuple[Path, ...]) -> list[Path]:
    """Files as given; folders expanded to the image and ``.npy`` files inside them (sorted)."""
    from compressor.export.preprocess import IMAGE_SUFFIXES

    files = []
    for path in paths:
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES | ARRAY_SUFFIXES)
            if not found:
                fail([f"{path}: no image or .npy files in this folder"], 2)
            files.extend(found)
        else:
            files.append(path)
    return files


def _load_input(path: Path):
    """An image file as itself (decoded by the classifier), a ``.npy`` file as its array (one image or a batch)."""
    import numpy as np

    from compressor.export.preprocess import InputError

    if path.suffix.lower() not in ARRAY_SUFFIXES:
        return path
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: not a readable .npy array ({exc})") from None


@click.command("predict")
@click.argument("model", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("paths", metavar="PATH...", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--top-k", type=click.IntRange(1), default=3, show_default=True, help="classes shown per image")
@click.option("--json", "as_json", is_flag=True, help="print JSON instead of a table")
def predict_command(model: Path, paths: tuple[Path, ...], top_k: int, as_json: bool) -> None:
    """Classify images (files, folders of images, .npy arrays) with an exported MODEL.onnx in onnxruntime."""
    from rich.table import Table

    from compressor.export.preprocess import InputError
    from compressor.export.runtime import OnnxClassifier

    try:
        classifier = OnnxClassifier(model)
    except (ValueError, FileNotFoundError) as exc:  # not an ONNX model, or not one of compressor's
        fail([str(exc)], 2)
    results, errors = [], []
    for path in _expand(paths):
        try:
            predictions = classifier.predict(_load_input(path), top_k=top_k)
        except InputError as exc:
            errors.append(str(exc))
            continue
        for i, row in enumerate(predictions):
            name = str(path) if len(predictions) == 1 else f"{path}[{i}]"
            results.append({"input": name, "predictions": [p.as_dict() for p in row]})
    if as_json:
        sys.stdout.write(json.dumps({"model": str(model), "task": classifier.metadata.task, "results": results},
                                    indent=2) + "\n")
    else:
        out_console.print(f"{model}: {classifier.metadata.task}, {len(classifier.class_names)} classes, "
                          f"{', '.join(classifier.providers)}", highlight=False, soft_wrap=True)
        table = Table()
        table.add_column("input")
        for k in range(top_k):
            table.add_column(f"top {k + 1}")
        for result in results:
            table.add_row(result["input"], *[f"{p['label']} ({p['probability']:.3f})" for p in result["predictions"]])
        out_console.print(table)
    if errors:  # one line per input that could not be read; the readable ones were classified above
        fail(errors, 2)


@click.command("serve")
@click.argument("model", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--host", default="127.0.0.1", show_default=True, help="address to bind (loopback by default)")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True)
@click.option("--max-batch-size", type=click.IntRange(1), default=32, show_default=True,
              help="most images per onnxruntime call")
@click.option("--max-wait-ms", type=click.FloatRange(0.0), default=5.0, show_default=True,
              help="how long a batch waits for more requests after the first")
@click.option("--max-body-mb", type=click.FloatRange(0.001), default=8.0, show_default=True,
              help="largest accepted request body")
@click.option("--max-images", type=click.IntRange(1), default=256, show_default=True, help="most images per request")
@click.option("--top-k", type=click.IntRange(1), default=5, show_default=True, help="default classes per image")
@click.option("--max-concurrent-decodes", type=click.IntRange(1), default=4, show_default=True,
              help="most image decodes and JSON parses at once; decoding holds at most this x --max-image-mb")
@click.option("--max-image-mb", type=click.FloatRange(8.0), default=128.0, show_default=True,
              help="most memory one image may take to decode, from its header: width x height x (bytes per pixel "
                   "(bit depth x channels) + 4) + 4 MiB; larger images and JSON bodies get 413")
@click.option("--log-level", type=click.Choice(("critical", "error", "warning", "info", "debug")), default="info",
              show_default=True)
def serve_command(model: Path, host: str, port: int, max_batch_size: int, max_wait_ms: float, max_body_mb: float,
                  max_images: int, top_k: int, max_concurrent_decodes: int, max_image_mb: float,
                  log_level: str) -> None:
    """Serve MODEL.onnx over HTTP: POST /predict, GET /health, /metadata, /metrics (FastAPI + uvicorn)."""
    from compressor.export.runtime import OnnxClassifier
    from compressor.export.server import ServerConfig, is_loopback, serve
    from compressor.progress import console

    try:  # no busy-waiting onnxruntime threads: they would take CPU from request parsing on the same cores
        classifier = OnnxClassifier(model, spin=False)
    except (ValueError, FileNotFoundError) as exc:  # not an ONNX model, or not one of compressor's
        fail([str(exc)], 2)
    if not is_loopback(host):
        console.print(f"[yellow]warning: binding {host}: the server is reachable from other machines; it has no "
                      "authentication[/yellow]", highlight=False)
    config = ServerConfig(max_batch_size=max_batch_size, max_wait_ms=max_wait_ms,
                          max_body_bytes=int(max_body_mb * (1 << 20)), max_images=max_images, top_k=top_k,
                          max_concurrent_decodes=max_concurrent_decodes, max_image_bytes=int(max_image_mb * (1 << 20)))
    serve(classifier, host=host, port=port, config=config, log_level=log_level)
