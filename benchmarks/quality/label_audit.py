"""Label-audit benchmark: the product's audit against the injected noise, beside the cleanlab reference, and what
``data.label_issues: drop | relabel | auto`` do to the student against ``report``.

Per regime and seed, one run directory goes through the real pipeline (data, teachers, audit, distill): the audit's
precision / recall against ``data/labels.npz``'s noise mask and its seconds (the audit stage alone: the teachers are
trained for distillation anyway; their seconds are listed too). Then the run is copied and re-distilled with
``drop``, ``relabel`` and ``auto`` (same teachers, same seed: paired; ``auto`` keeps ``report`` or ``drop`` by
validation accuracy, and the table says which). Beside it, on the same training split and noise:
cleanlab's ``find_label_issues`` on 5-fold cross-validated probabilities of logistic regression on the raw pixels
and of a ``small_cnn`` trained 15 epochs per fold (``cleanlab_reference.py``).

Regimes: ``quickstart`` (``examples/quickstart.yaml``: 3 teachers, 15 + 20 epochs with crop augmentation) and
``converged`` (issue 13's regime: five ``small_cnn_wide`` teachers, overlap 0.4, ``small_cnn`` student, 60 epochs
each, SGD 0.05 with steps at 30 and 45, no augmentation, tau 4, alpha 0.9).

    .venv/bin/python benchmarks/quality/label_audit.py --regime quickstart --seeds 0 1 2 --workers 2

Writes a markdown table to stdout and every figure to ``--json`` (updated as each seed finishes;
``--table-only`` prints the table of an existing ``--json``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import yaml  # noqa: E402

MODES = ("report", "drop", "relabel", "auto")
FILTERS = ("prune_by_class", "prune_by_noise_rate", "both", "confident_learning", "predicted_neq_given")
TEMPERATURES = (2.0, 4.0)  # the teachers' logits divided by tau before the softmax (with the default filter)
CONVERGED_TRAINING = {"epochs": 60, "batch_size": 64,
                      "optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 5.0e-4},
                      "schedule": {"name": "multistep", "milestones": [30, 45], "gamma": 0.1},
                      "augment": {"crop_padding": 0}}


def regime_spec(regime: str, seed: int, mode: str) -> dict:
    """The raw spec of one run (quickstart or converged), certification and export off."""
    raw = yaml.safe_load((ROOT / "examples" / "quickstart.yaml").read_text())
    raw.update(seed=seed, device="cpu", robustness={"enabled": False}, export={"onnx": False})
    raw["data"] = {**raw["data"], "label_issues": mode}
    if regime == "converged":
        raw["subsets"] = {"count": 5, "overlap": 0.4}
        raw["teachers"] = {"archs": ["small_cnn_wide"], "training": CONVERGED_TRAINING}
        raw["student"] = {"arch": "small_cnn"}
        raw["distillation"] = {"alpha": 0.9, "temperature": 4.0, "weighting": "exponential",
                               "training": CONVERGED_TRAINING, "averaging": {"enabled": True, "warmup_epochs": 5}}
    return raw


def filter_figures(spec, run_dir: Path) -> dict:
    """Precision / recall of cleanlab's other filters and of tempered probabilities on the run's teachers."""
    import torch
    from cleanlab.filter import find_label_issues

    from compressor.data.label_audit import FILTER_BY, out_of_sample_probabilities, seen_mask
    from compressor.pipeline.audit_stage import teacher_logits
    from compressor.pipeline.context import RunContext
    from compressor.pipeline.data_stage import subset_indices

    ctx = RunContext(spec=spec, run_dir=run_dir, device=torch.device("cpu"))
    train = ctx.bundle().train
    logits = teacher_logits(ctx)  # the audit stage's own pass: through the data set's window, in batches
    seen = seen_mask(subset_indices(ctx), len(train))
    truth = train.noise_mask

    def score(temperature: float, filter_by: str) -> dict:
        probs = torch.softmax(torch.from_numpy(logits) / temperature, dim=-1).numpy()
        mean, oos = out_of_sample_probabilities(probs, seen)
        flagged = find_label_issues(train.labels, mean.astype(np.float64), filter_by=filter_by)
        hits = int((flagged & truth).sum())
        in_sample = truth & ~oos
        return {"precision": hits / max(int(flagged.sum()), 1), "recall": hits / max(int(truth.sum()), 1),
                "recall_in_sample": int((flagged & in_sample).sum()) / max(int(in_sample.sum()), 1)}

    figures = {f"{name} tau=1": score(1.0, name) for name in FILTERS}
    figures.update({f"{FILTER_BY} tau={t:g}": score(t, FILTER_BY) for t in TEMPERATURES})
    return figures


def run_seed(regime: str, seed: int, work_dir: str) -> dict:
    """One seed: the audit, the reference, and the student's test accuracy under each ``data.label_issues``."""
    import torch

    torch.set_num_threads(1)
    from compressor.io import read_json
    from compressor.pipeline import run_pipeline
    from compressor.pipeline.records import LabelAudit, StudentSummary
    from compressor.pipeline.runner import STAGES
    from compressor.run_layout import RunLayout
    from compressor.spec import parse_spec

    sys.path.insert(0, str(Path(__file__).parent))
    from cleanlab_reference import audit as reference_audit

    stages = [s for s in STAGES if s.name in ("data", "teachers", "audit", "distill", "metrics")]
    base = Path(work_dir) / f"{regime}_seed{seed}"
    shutil.rmtree(base, ignore_errors=True)
    row = {"regime": regime, "seed": seed}
    for mode in MODES:
        run_dir = base / mode
        if mode != "report":
            shutil.copytree(base / "report", run_dir)  # same data, teachers and audit: only distillation re-runs
        results = {r.name: r for r in run_pipeline(parse_spec(regime_spec(regime, seed, mode)), run_dir, stages=stages)}
        assert mode == "report" or results["teachers"].status == results["audit"].status == "skipped"
        layout = RunLayout(run_dir)
        student = StudentSummary.read(layout.student_summary)
        metrics = read_json(layout.metrics)  # the metrics stage measures the final student on the test split
        row[f"accuracy_{mode}"] = metrics["test"][metrics["final_model"]]["accuracy"]
        row[f"changed_{mode}"] = student.changed_rows
        row[f"val_{mode}"] = student.val[student.final]["accuracy"] if student.val else None
        if mode == "auto":
            row["auto_kept"] = student.label_issues  # the mode auto chose on the validation split
        if mode == "report":
            audit = LabelAudit.read(layout.label_audit)
            row.update(flagged=audit.flagged, precision=audit.precision, recall=audit.recall,
                       audit_seconds=audit.seconds, out_of_sample=audit.out_of_sample,
                       teacher_seconds=read_json(layout.stage_marker("teachers"))["seconds"],
                       filters=filter_figures(parse_spec(regime_spec(regime, seed, mode)), run_dir))
    spec = parse_spec(regime_spec(regime, seed, "report"))
    reference = reference_audit(seed, spec.noise.rate)
    row.update(ref_precision=reference["precision"], ref_recall=reference["recall"], ref_seconds=reference["seconds"],
               ref_flagged=reference["flagged"])
    cnn = reference_audit(seed, spec.noise.rate, model="small_cnn")
    row.update(cnn_precision=cnn["precision"], cnn_recall=cnn["recall"], cnn_seconds=cnn["seconds"])
    return row


def _mean_std(values) -> str:
    values = np.asarray(values, dtype=float)
    spread = values.std(ddof=1) if len(values) > 1 else 0.0
    return f"{values.mean():.3f} ± {spread:.3f}"


def table(rows: list[dict]) -> str:
    """Markdown: one row per seed and a mean ± std row per regime (deltas paired by seed)."""
    lines = ["| regime | seed | flagged | audit precision | audit recall | audit s | teachers s | logreg reference "
             "precision | recall | s | CNN reference precision | recall | s | student report | drop - report | "
             "relabel - report | auto - report (kept) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for regime in sorted({r["regime"] for r in rows}):
        group = [r for r in rows if r["regime"] == regime]
        for r in group:
            lines.append(f"| {regime} | {r['seed']} | {r['flagged']} | {r['precision']:.3f} | {r['recall']:.3f} | "
                         f"{r['audit_seconds']:.1f} | {r['teacher_seconds']:.0f} | {r['ref_precision']:.3f} | "
                         f"{r['ref_recall']:.3f} | {r['ref_seconds']:.2f} | {r['cnn_precision']:.3f} | "
                         f"{r['cnn_recall']:.3f} | {r['cnn_seconds']:.1f} | "
                         f"{r['accuracy_report']:.3f} | "
                         f"{r['accuracy_drop'] - r['accuracy_report']:+.3f} | "
                         f"{r['accuracy_relabel'] - r['accuracy_report']:+.3f} | {_auto(r)} |")
        pick = lambda key, group=group: [r[key] for r in group]  # noqa: E731
        lines.append(
            f"| {regime} | mean ± std | | {_mean_std(pick('precision'))} | {_mean_std(pick('recall'))} | "
            f"{np.mean(pick('audit_seconds')):.1f} | {np.mean(pick('teacher_seconds')):.0f} | "
            f"{_mean_std(pick('ref_precision'))} | {_mean_std(pick('ref_recall'))} | "
            f"{np.mean(pick('ref_seconds')):.2f} | {_mean_std(pick('cnn_precision'))} | "
            f"{_mean_std(pick('cnn_recall'))} | {np.mean(pick('cnn_seconds')):.1f} | "
            f"{_mean_std(pick('accuracy_report'))} | "
            f"{_mean_std(np.subtract(pick('accuracy_drop'), pick('accuracy_report')))} | "
            f"{_mean_std(np.subtract(pick('accuracy_relabel'), pick('accuracy_report')))} | "
            f"{_auto_summary(group)} |")
    return "\n".join(lines)


def _auto(row: dict) -> str:
    """``auto``'s paired difference from ``report`` and the mode it kept (``-``: a run from before ``auto``)."""
    if "accuracy_auto" not in row:
        return "-"
    return f"{row['accuracy_auto'] - row['accuracy_report']:+.3f} ({row['auto_kept']})"


def _auto_summary(group: list[dict]) -> str:
    runs = [r for r in group if "accuracy_auto" in r]
    if not runs:
        return "-"
    drops = sum(r["auto_kept"] == "drop" for r in runs)
    deltas = [r["accuracy_auto"] - r["accuracy_report"] for r in runs]
    return f"{_mean_std(deltas)} (drop kept on {drops}/{len(runs)})"


def filter_table(rows: list[dict]) -> str:
    """Markdown: mean precision / recall (and recall on in-sample noisy rows) per filter and temperature."""
    lines = ["| regime | filter_by, temperature | precision | recall | recall on rows every teacher saw |",
             "|---|---|---|---|---|"]
    for regime in sorted({r["regime"] for r in rows}):
        group = [r for r in rows if r["regime"] == regime]
        for name in group[0]["filters"]:
            pick = lambda key, name=name, group=group: [r["filters"][name][key] for r in group]  # noqa: E731
            lines.append(f"| {regime} | {name} | {_mean_std(pick('precision'))} | {_mean_std(pick('recall'))} | "
                         f"{_mean_std(pick('recall_in_sample'))} |")
    return "\n".join(lines)


def main() -> None:
    """Run the seeds (in ``--workers`` processes of one thread each) and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--regime", choices=["quickstart", "converged"], nargs="+", default=["quickstart"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--converged-seeds", type=int, nargs="+", default=None,
                        help="seeds of the converged regime (default: --seeds)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--work-dir", default="runs/label_audit")
    parser.add_argument("--json", default="benchmarks/results/label_audit.json")
    parser.add_argument("--table-only", action="store_true", help="print the table of the existing --json")
    args = parser.parse_args()
    if args.table_only:
        rows = json.loads(Path(args.json).read_text())
        print(table(rows) + "\n\n" + filter_table(rows))
        return
    start = time.perf_counter()
    seeds = {"quickstart": args.seeds, "converged": args.converged_seeds or args.seeds}
    jobs = [(regime, seed) for regime in args.regime for seed in seeds[regime]]
    rows = []
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    with ProcessPoolExecutor(args.workers) as pool:
        futures = [pool.submit(run_seed, regime, seed, args.work_dir) for regime, seed in jobs]
        for future in as_completed(futures):  # every finished seed is saved at once
            rows.append(future.result())
            rows.sort(key=lambda r: (r["regime"], r["seed"]))
            Path(args.json).write_text(json.dumps(rows, indent=1) + "\n")
    print(table(rows) + "\n\n" + filter_table(rows))
    print(f"\nwall time {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
