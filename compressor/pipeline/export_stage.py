"""Export stage: the final student to ONNX, parity-checked in onnxruntime, and optionally to int8 behind a gate.

A failed parity check fails the stage. A refused (or failed) int8 quantization does not: the fp32 model stays the
deployable one, ``export.json`` records the reason and the stage prints it. Both decisions are taken on the
validation split (its labels as given), never on the test split; without validation samples parity is checked on
random probe images and the int8 model is refused.

The ONNX models and their report are written into a staging folder and published as one unit
(``compressor.io.publish_together``): the previous export's files, stale int8 files included, are removed before
the new ones are renamed in, so a kill at any moment never leaves the files of two students side by side.
``export.json`` records the SHA-256 of every ONNX file it describes.
"""

from __future__ import annotations

import contextlib
import hashlib
import shutil
from collections.abc import Callable
from pathlib import Path

from compressor.checkpoint import load_classifier
from compressor.export.checked_export import export_checked, parity_failure
from compressor.export.parity import UnitInputs
from compressor.export.quantize import calibration_images, int8_paths, quantize_with_gate
from compressor.io import finish_publish, publish_together, sha256_file, write_json
from compressor.pipeline.context import RunContext, StageError
from compressor.pipeline.stage import LAYOUT, Stage
from compressor.progress import console
from compressor.seeding import derive_seed
from compressor.spec import Spec, dump_spec
from compressor.spec.export import QuantizeSpec


def spec_hash(spec: Spec) -> str:
    """SHA-256 of the resolved spec, stored in the ONNX metadata to tie a model to the run that made it."""
    return hashlib.sha256(dump_spec(spec).encode()).hexdigest()


def export_run(ctx: RunContext, onnx_path: Path, quantize: QuantizeSpec, checkpoint: Path | None = None,
               opset: int | None = None) -> dict:
    """Export a run's model to ``onnx_path`` (+ int8 beside it when ``quantize.enabled``) and return the report.

    Args:
        checkpoint: the classifier to export; the run's final student by default.
        opset: ONNX opset; the spec's ``export.opset`` by default. The metadata's ``spec_hash`` is always the
            run's spec, whatever the export options.

    Returns:
        ``{"onnx", "opset", "metadata", "parity", "int8"}``; ``int8`` is None when quantization is disabled or
        parity failed.
    """
    spec = ctx.spec.export
    model, info = load_classifier(checkpoint or ctx.layout.final_student, "cpu")
    val = ctx.bundle().val
    report = export_checked(model, info, onnx_path, opset=opset or spec.opset, spec_hash=spec_hash(ctx.spec),
                            images=val.images, labels=val.labels, parity_atol=spec.parity_atol,
                            min_agreement=spec.min_agreement)
    report["int8"] = None
    if not (quantize.enabled and report["parity"]["passed"]):
        return report
    calibration = None
    if quantize.mode == "static":
        calibration = calibration_images(ctx.bundle().train.images, quantize.calibration_samples,
                                         derive_seed(ctx.spec.seed, "calibration"), ctx.bundle().pixel_format)
    report["int8"] = quantize_with_gate(
        onnx_path, *int8_paths(onnx_path), mode=quantize.mode, calibration=calibration,
        images=UnitInputs(val.images, val.window), labels=val.labels, task=info.task,
        max_accuracy_drop=quantize.max_accuracy_drop, calibration_method=quantize.calibration_method,
        per_channel=quantize.per_channel,
    )
    return report


def say_int8(report: dict | None) -> None:
    """Print the int8 outcome: the deployable file, or why there is none."""
    if report is None:
        return
    if report["passed"]:
        console.print(f"  int8 ({report['mode']}): {report['file']} {report['reason']}", highlight=False,
                      soft_wrap=True)
    else:
        where = f"; kept as {report['rejected_file']} (not deployable)" if report.get("rejected_file") else ""
        console.print(f"  [yellow]int8 ({report['mode']}) not written as deployable model: {report['reason']}"
                      f"{where}[/yellow]", highlight=False, soft_wrap=True)


def publish_export(produce: Callable[[Path], dict], onnx_path: Path, report_path: Path, staging: Path,
                   journal: Path) -> dict:
    """Export into ``staging`` with ``produce`` and publish the models and the report as one unit.

    Args:
        produce: writes the fp32 model (and any int8 model beside it) at the path it is given; returns the report.
        onnx_path: where the fp32 model is published; the int8 files go beside it (``int8_paths``).
        report_path: where the report is published (it gets ``sha256``: file name -> hash of each ONNX file).
        staging: an empty folder on the same file system (removed afterwards).
        journal: the publication's journal (a previous, interrupted one is completed first).

    Returns:
        The report as published.
    """
    finish_publish(journal)
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    report = produce(staging / Path(onnx_path).name)
    report["sha256"] = {p.name: sha256_file(p) for p in sorted(staging.glob("*.onnx"))}
    write_json(staging / Path(report_path).name, report)
    targets = [Path(onnx_path), *int8_paths(onnx_path), Path(report_path)]  # fp32, int8 (deployable, rejected)
    files = {target: (staging / target.name if (staging / target.name).is_file() else None) for target in targets}
    publish_together(files, journal)
    shutil.rmtree(staging, ignore_errors=True)
    for folder in {staging.parent, Path(journal).parent}:  # the run's staging and journal folders, once empty
        with contextlib.suppress(OSError):
            folder.rmdir()
    return report


def run_export(ctx: RunContext) -> dict:
    """Export ``student.onnx`` (and ``student.int8.onnx`` when the gate passes); write ``export.json``."""
    layout = ctx.layout
    report = publish_export(lambda staged: export_run(ctx, staged, ctx.spec.export.quantize), layout.onnx,
                            layout.export_report, layout.staging("export"), layout.publish_journal("export"))
    parity = report["parity"]
    if not parity["passed"]:
        raise StageError(parity_failure(parity), exit_code=3)
    say_int8(report["int8"])
    summary = {"max_abs_diff": parity["max_abs_diff"], "agreement": parity["agreement"],
               "accuracy_onnx": parity["accuracy_onnx"]}
    if report["int8"] is not None:
        int8 = report["int8"]
        summary.update(int8=int8["file"], int8_passed=int8["passed"], int8_accuracy=int8.get("accuracy_int8"))
    return summary


EXPORT_STAGE = Stage(
    name="export",
    sections=("export", "seed"),
    after=("distill",),
    run=run_export,
    outputs=lambda spec: [LAYOUT.onnx, LAYOUT.export_report],
    optional_outputs=lambda spec: int8_paths(LAYOUT.onnx),
    extra_key=spec_hash,  # the ONNX metadata carries the whole spec's hash: any spec change re-exports
    enabled=lambda spec: spec.export.onnx,
)
