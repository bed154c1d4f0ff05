"""Certify stage: robustness of the final student (and, for comparison, the run's other models).

Writes ``certify/<model>.json`` per model (the full figures) and ``certificate.json`` (the final student's
figures, the comparison summary and the gate). A failed gate does not fail the stage: the certificate records
each threshold's pass/fail, later stages still run (the report shows the failure), and ``compressor run`` exits
with status 3 naming every failed threshold (the stage summary carries them as ``gate_failures``).

A model whose checkpoint, data and robustness settings (the gate aside) are unchanged is not evaluated again: its
``certify/<model>.json`` is reused, so editing only a threshold re-checks the gate in seconds.
"""

from __future__ import annotations

import hashlib
import json

from compressor.checkpoint import CheckpointError
from compressor.data import fingerprint
from compressor.io import read_json, sha256_file, write_json
from compressor.pipeline.context import RunContext, StageError
from compressor.pipeline.records import StudentSummary
from compressor.pipeline.stage import LAYOUT, Stage
from compressor.progress import console
from compressor.robustness.certificate import build_certificate, failure_messages, headline
from compressor.robustness.checkpoints import CheckpointMismatch, certify_checkpoint
from compressor.robustness.evaluate import select_data

EVAL_FORMAT = 1  # bump when the per-model figures change, so cached certify/<model>.json are recomputed


def certified_models(ctx: RunContext) -> list[tuple[str, str]]:
    """``(name, path relative to the run directory)`` of each model to certify, the final student first.

    ``robustness.models``: ``final`` = the final student; ``students`` = also the other student (the live one, or
    the averaged one when ``select: best_val`` chose the live one), the mutual peer (CMD) and any
    ``baselines/*.safetensors``; ``all`` = also the teachers (when the run has any), except ONNX teachers:
    onnxruntime gives no gradients, which the attacks need.
    """
    layout = ctx.layout
    final = StudentSummary.read(layout.student_summary).final
    models = [(final, layout.final_student)]
    which = ctx.spec.robustness.models
    if which in ("students", "all"):
        if final != "student":
            models.append(("student", layout.last_student))
        elif layout.averaged_student.exists():
            models.append(("student_averaged", layout.averaged_student))
        if ctx.spec.distillation.mutual.enabled:
            models.append(("peer", layout.peer))
        if layout.baselines.is_dir():
            models += [(p.stem, p) for p in sorted(layout.baselines.glob("*.safetensors"))]
    if which == "all" and ctx.spec.distillation.uses_teachers:
        onnx = [p.name for p in ctx.teacher_paths() if p.suffix == ".onnx"]
        if onnx:
            console.print(f"  not certified: {', '.join(onnx)} (ONNX teachers run without gradients, which the "
                          "attacks need)", highlight=False, markup=False)
        models += [(f"teacher_{i}", p) for i, p in enumerate(ctx.teacher_paths()) if p.suffix != ".onnx"]
    return [(name, layout.relative(path)) for name, path in models]


def _eval_key(ctx: RunContext, name: str, weights_sha: str, smoothing: bool, landscape: bool, data_hash: str) -> str:
    """Hash of everything a model's figures depend on (the gate excluded)."""
    settings = ctx.spec.robustness.model_dump(mode="json")
    settings.pop("gate")
    payload = {"format": EVAL_FORMAT, "name": name, "weights": weights_sha, "data": data_hash, "seed": ctx.spec.seed,
               "settings": settings, "smoothing": smoothing, "landscape": landscape}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def run_certify(ctx: RunContext) -> dict:
    """Evaluate each model, write ``certify/<model>.json`` and ``certificate.json``; return the gate outcome."""
    spec = ctx.spec
    robustness = spec.robustness
    bundle = ctx.bundle()
    data = select_data(bundle.test, bundle.train, bundle.task, robustness, spec.seed)
    data_hash = fingerprint(spec)
    records = []
    for position, (name, rel) in enumerate(certified_models(ctx)):
        path = ctx.run_dir / rel
        smoothing = position == 0 or robustness.smoothing.compare
        landscape = position == 0 or (robustness.landscape.compare and name == "student")
        key = _eval_key(ctx, name, sha256_file(path), smoothing, landscape, data_hash)
        cache = ctx.layout.certify_record(name)
        try:
            cached = read_json(cache)
        except (OSError, ValueError):  # not evaluated yet, or unreadable
            cached = {}
        if cached.get("key") == key:
            records.append(cached)
            continue
        try:
            record = certify_checkpoint(name, path, data, bundle.num_classes, robustness, seed=spec.seed,
                                        device=ctx.device, smoothing=smoothing, landscape=landscape, file_label=rel)
        except (CheckpointMismatch, CheckpointError) as exc:  # e.g. a user's baseline that does not fit or load
            raise StageError(f"cannot certify {rel}: {exc}") from None
        record["key"] = key
        write_json(cache, record)
        records.append(record)
    certificate = build_certificate(
        records[0], records[1:], robustness, seed=spec.seed,
        data={"source": spec.data.source, "fingerprint": data_hash, "split": "test", "test_samples": len(bundle.test)},
    )
    write_json(ctx.layout.certificate, certificate)
    failures = failure_messages(certificate["gate"])
    results = certificate["results"]
    summary = {"model": records[0]["name"], "clean_accuracy": results["clean"]["accuracy"],
               "mca": (results.get("corruptions") or {}).get("mca"),
               "gate_passed": certificate["gate"]["passed"], "gate_failures": failures}
    console.print(f"  {headline(certificate)}", highlight=False, markup=False)
    for line in failures:
        console.print(f"[yellow]{line}[/yellow]", highlight=False)
    return summary


CERTIFY_STAGE = Stage(
    name="certify",
    sections=("robustness", "seed"),
    after=("teachers", "distill"),
    run=run_certify,
    outputs=lambda spec: [LAYOUT.certificate],
    enabled=lambda spec: spec.robustness.enabled,
)
