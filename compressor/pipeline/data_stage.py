"""Data stage: load, split, inject label noise; save labels, noise masks, subsets and a summary."""

from __future__ import annotations

import numpy as np

from compressor.data import data_summary, fingerprint, label_arrays, noise_summary, overlapping_subsets
from compressor.io import write_npz
from compressor.pipeline.context import RunContext, StageError
from compressor.pipeline.records import DataSummary
from compressor.pipeline.stage import LAYOUT, Stage
from compressor.seeding import derive_seed


def subset_indices(ctx: RunContext) -> list[np.ndarray]:
    """The teachers' overlapping subsets of the training set (seeded by the spec seed)."""
    spec = ctx.spec
    subsets = overlapping_subsets(
        len(ctx.bundle().train), spec.subsets.count, spec.subsets.overlap, derive_seed(spec.seed, "subsets"),
        spec.subsets.layout,
    )
    empty = [i for i, s in enumerate(subsets) if len(s) == 0]
    if empty:
        raise StageError(
            f"subsets {empty} are empty: {len(ctx.bundle().train)} training samples cannot fill "
            f"{spec.subsets.count} subsets at overlap {spec.subsets.overlap}"
        )
    return subsets


def run_data(ctx: RunContext) -> dict:
    """Prepare the data and write ``data/labels.npz`` and ``data/summary.json``.

    The labels come from the source (``ctx.source_data``), never from a previous run's ``data/labels.npz``, which
    stays in place until the new one replaces it.
    """
    bundle = ctx.source_data()
    ctx._bundle = ctx.guarded(bundle)  # later stages read exactly the labels saved here
    write_npz(ctx.layout.data_labels, label_arrays(bundle))
    summary = DataSummary(
        source=ctx.spec.data.source, task=str(bundle.task),
        **data_summary(bundle),  # classes, image [C, H, W], pixels {dtype, window}, mean, std
        noise={"kind": ctx.spec.noise.kind, "rate": ctx.spec.noise.rate, **noise_summary(bundle)},
        groups=bundle.num_groups, fingerprint=fingerprint(ctx.spec),
    )
    summary.write(ctx.layout.data_summary)
    return {"train": len(bundle.train), "val": len(bundle.val), "test": len(bundle.test),
            "noise_rate": summary.noise["train"]["noise_rate"]}


DATA_STAGE = Stage(
    name="data",
    sections=("data", "noise", "seed"),
    after=(),
    run=run_data,
    outputs=lambda spec: [LAYOUT.data_labels, LAYOUT.data_summary],
    extra_key=fingerprint,
    ignores=("data.label_issues",),  # read by distillation alone
)
