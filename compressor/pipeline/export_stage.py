"""Export stage: the final student to ONNX, parity-checked in onnxruntime; a failed check fails the stage."""

from __future__ import annotations

import hashlib

import compressor
from compressor.checkpoint import load_classifier
from compressor.export import check_parity, export_onnx
from compressor.io import write_json
from compressor.pipeline.context import RunContext, StageError
from compressor.pipeline.distill_stage import FINAL_STUDENT
from compressor.pipeline.stage import Stage
from compressor.spec import dump_spec

ONNX_FILE = "student.onnx"


def onnx_metadata(ctx: RunContext, info) -> dict:
    """What a deployment needs to know about the model, stored inside the ONNX file."""
    return {
        "compressor_version": compressor.__version__,
        "task": info.task,
        "class_names": info.class_names,
        "input_channels": info.in_channels,
        "input_size": info.image_size,
        "input_range": "float32 pixels in [0, 1], NCHW; normalisation is inside the graph",
        "normalization_mean": info.mean,
        "normalization_std": info.std,
        "arch": info.arch,
        "spec_hash": hashlib.sha256(dump_spec(ctx.spec).encode()).hexdigest(),
    }


def run_export(ctx: RunContext) -> dict:
    """Export ``student.onnx`` and write ``export.json`` with the parity figures."""
    model, info = load_classifier(ctx.path(FINAL_STUDENT), "cpu")
    path = ctx.path(ONNX_FILE)
    spec = ctx.spec.export
    export_onnx(model, (info.in_channels, info.image_size, info.image_size), path, opset=spec.opset,
                metadata=onnx_metadata(ctx, info))
    test = ctx.bundle().test
    parity = check_parity(path, model, test.images, test.labels, info.task, atol=spec.parity_atol,
                          min_agreement=spec.min_agreement)
    write_json(ctx.path("export.json"), {"onnx": ONNX_FILE, "opset": spec.opset, "parity": parity})
    if not parity["passed"]:
        path.unlink(missing_ok=True)
        raise StageError(
            f"ONNX parity check failed: max |logit difference| {parity['max_abs_diff']:.2e} (allowed "
            f"{spec.parity_atol:.0e}), argmax agreement {parity['agreement']:.4f} (required {spec.min_agreement})"
        )
    return {"max_abs_diff": parity["max_abs_diff"], "agreement": parity["agreement"],
            "accuracy_onnx": parity["accuracy_onnx"]}


EXPORT_STAGE = Stage(
    name="export",
    sections=("export",),
    after=("distill",),
    run=run_export,
    outputs=lambda spec: [ONNX_FILE, "export.json"],
    enabled=lambda spec: spec.export.onnx,
)
