"""Report stage (last): ``report.md``, ``report.html`` and ``plots/*.png`` from the run directory's artifacts."""

from __future__ import annotations

import csv
import itertools

import torch

from compressor.checkpoint import load_classifier
from compressor.data import DataError, to_model_input
from compressor.metrics import predict_logits
from compressor.pipeline.context import RunContext
from compressor.pipeline.stage import LAYOUT, Stage
from compressor.progress import console


def worst_issues(ctx: RunContext) -> dict | None:
    """The label audit's worst flagged training images with their captions (None when the run has no audit or it
    flagged no row).

    Only those rows are read (a stored split is never read whole), through the data set's window: ``images`` is
    ``float32 [M, C, H, W]`` in [0, 1], as the models see them.
    """
    from compressor.report.build import ISSUES_SHOWN

    if not ctx.layout.label_issues.exists():
        return None
    with open(ctx.layout.label_issues, newline="") as handle:
        rows = list(itertools.islice(csv.DictReader(handle), ISSUES_SHOWN))
    if not rows:
        return None
    index = [int(r["index"]) for r in rows]
    captions = [f"#{r['index']}: {r['given_name']} -> {r['suggested_name']}\n{float(r['score']):.2f}" for r in rows]
    train = ctx.bundle().train
    pixels = train.images[torch.as_tensor(index, dtype=torch.long)]
    return {"images": to_model_input(pixels, train.window, "cpu").numpy(), "captions": captions}


def generate_report(ctx: RunContext, *, data_optional: bool = False) -> dict:
    """Write the report of the run in ``ctx.run_dir``.

    Args:
        ctx: the run (its spec gives the test split for the confusion matrix).
        data_optional: when the data set cannot be read (e.g. ``compressor report`` on another machine), leave
            the confusion matrix out with a warning instead of failing.

    Returns:
        ``{"report": [...], "plots": [...]}``.
    """
    from compressor.report.build import write_report  # matplotlib is loaded only when a report is written

    logits = labels = issues = None
    try:
        test = ctx.bundle().test
        issues = worst_issues(ctx)
    except DataError as exc:
        if not data_optional:
            raise
        console.print(f"[yellow]warning: confusion matrix left out: {exc}[/yellow]", highlight=False)
    else:
        model, _ = load_classifier(ctx.layout.final_student, ctx.device)
        logits, labels = predict_logits(model, test.images, ctx.device, window=test.window), test.labels
    return write_report(ctx.run_dir, logits, labels, issues)


REPORT_STAGE = Stage(
    name="report",
    sections=(),
    after=("metrics", "certify", "export"),
    run=generate_report,
    outputs=lambda spec: [LAYOUT.report_md, LAYOUT.report_html],
)
