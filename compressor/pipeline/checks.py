"""Checks a run passes before it trains anything: what the spec asks of the data and of the method registry.

Both training stages call ``check_data_support`` first, so a doomed run fails before its longest stage.
"""

from __future__ import annotations

from compressor.methods.registry import unknown_methods
from compressor.pipeline.context import RunContext, StageError
from compressor.spec.consistency import SINGLE_LABEL_ONLY
from compressor.training.precision import resolve_precision
from compressor.training.validation import needs_validation


def check_data_support(ctx: RunContext) -> None:
    """Raise ``StageError`` for method settings the data cannot support (known only once the data is loaded), for
    extension methods (``training.methods``) that are not registered, for validation decisions without validation
    samples and for a precision the device does not have."""
    spec, bundle = ctx.spec, ctx.bundle()
    distill = spec.distillation
    for section in ("teachers", "distillation"):
        train = getattr(spec, section).training
        unknown = unknown_methods(train.methods)
        if unknown:
            raise StageError(f"{section}.training.methods: unknown method {unknown[0]!r} (register it with "
                             "compressor.methods.register_method before running)")
        if section == "teachers" and not distill.uses_teachers:
            continue  # Baseline I trains no teacher
        wanted = needs_validation(train)
        if wanted and len(bundle.val) == 0:
            raise StageError(f"{section}.training: {' and '.join(wanted)} need validation samples, but the validation "
                             "split is empty (set data.val_fraction > 0, or give the data a val split; or use "
                             "select: last without early stopping)")
        try:
            resolve_precision(train.precision, ctx.device)
        except ValueError as exc:
            raise StageError(f"{section}.training.precision: {exc}") from None
    if bundle.task.multilabel and distill.teacher_noise.swap != "none":
        raise StageError("distillation.teacher_noise.swap is single-label only, but the data is multi-label: "
                         f"{SINGLE_LABEL_ONLY['distillation.teacher_noise.swap']}")
    if distill.group_dro.enabled and bundle.train.groups is None:
        raise StageError("distillation.group_dro needs group labels, but the training data has none (npz: add "
                         "train_groups/val_groups/test_groups arrays; CSV: add a 'group' column)")
