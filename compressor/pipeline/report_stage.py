"""Report stage (last): ``report.md``, ``report.html`` and ``plots/*.png`` from the run directory's artifacts."""

from __future__ import annotations

from compressor.checkpoint import load_classifier
from compressor.data import DataError
from compressor.metrics import predict_logits
from compressor.pipeline.context import RunContext
from compressor.pipeline.stage import LAYOUT, Stage
from compressor.progress import console


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

    logits = labels = None
    try:
        test = ctx.bundle().test
    except DataError as exc:
        if not data_optional:
            raise
        console.print(f"[yellow]warning: confusion matrix left out: {exc}[/yellow]", highlight=False)
    else:
        model, _ = load_classifier(ctx.layout.final_student, ctx.device)
        logits, labels = predict_logits(model, test.images, ctx.device, window=test.window), test.labels
    return write_report(ctx.run_dir, logits, labels)


REPORT_STAGE = Stage(
    name="report",
    sections=(),
    after=("metrics", "certify", "export"),
    run=generate_report,
    outputs=lambda spec: [LAYOUT.report_md, LAYOUT.report_html],
)
