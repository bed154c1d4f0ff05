"""Quality benchmark in the converged regime (issue 13): do the papers' claims hold where models memorise noise?

One command runs every row of ``converged_rows.py`` for 5 seeds through the real pipeline (data, teachers, distill,
metrics stages) and writes a markdown fragment (mean ± sample std over seeds, paired deltas per seed and a verdict
per claim) to ``benchmarks/results/quality-converged.md`` and the per-run figures to
``benchmarks/quality/results-converged.json``:

    .venv/bin/python benchmarks/quality/run_converged.py

Each (seed, layout) is one job in its own run directory, so rows that share teachers train them once; jobs (layout by
layout, over every seed, in the order of ``LAYOUTS``) run in
``--workers`` processes with one torch thread each. Besides the clean test accuracy, every row records its accuracy
on the validation split (noisy labels, like the training labels: the only split a decision may be taken on) and,
for Baseline I and RoS-KD, the accuracy under L-inf PGD (10 steps, one random start) on the test split. The JSON is
rewritten after every job, so an interrupted run keeps what finished. ``--quick`` (1 seed, 2 epochs) only checks
that everything runs.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import shutil
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE))

from converged_rows import EPOCHS, LAYOUTS, ROWS, row_spec  # noqa: E402
from group_digits import write_group_digits  # noqa: E402
from report import claim_check, mean_std  # noqa: E402

COMMAND = ".venv/bin/python benchmarks/quality/run_converged.py"
NOISE = "symmetric-40"  # the records' noise key (report.claim_check pairs records by noise setting and seed)
PGD_EPS = (2 / 255, 8 / 255)
PGD_ROWS = ("Baseline I", "RoS-KD")

# (claim, paper, row A, row B, metric); "teachers_accuracy": the mean test accuracy of row B's teachers.
CLAIMS = (
    ("RoS-KD beats the student trained alone", "RoS-KD, Table I", "RoS-KD", "Baseline I", "accuracy"),
    ("RoS-KD beats single-teacher KD", "RoS-KD, Table I", "RoS-KD", "Baseline II", "accuracy"),
    ("RoS-KD beats equal-weight multi-teacher KD", "RoS-KD, Table I", "RoS-KD", "Baseline III", "accuracy"),
    ("smooth parameter averaging helps", "RoS-KD, Table I (V vs RoS-KD)", "RoS-KD", "Baseline V", "accuracy"),
    ("overlapping subsets + stochastic weights beat equal weights on all data", "RoS-KD, Table I (V vs III)",
     "Baseline V", "Baseline III", "accuracy"),
    ("the RoS-KD student beats its own teachers", "noise in KD, Fig. 9", "RoS-KD", "RoS-KD", "teachers_accuracy"),
    ("KD beats the student trained alone under label noise", "noise in KD, Fig. 9", "Baseline II", "Baseline I",
     "accuracy"),
    ("messy collaboration (MC-S, r = 0.5) beats Hinton KD under label noise", "noise in KD, Fig. 10",
     "Messy collaboration", "Baseline II", "accuracy"),
    ("confident knowledge selection (CMD-P gate) beats all knowledge", "CMD, Tables 1 and 3", "RoS-KD + CMD",
     "RoS-KD", "accuracy"),
    ("the RoS-KD student is more robust to PGD (L-inf 2/255) than the student alone", "RoS-KD, Table II",
     "RoS-KD", "Baseline I", "pgd_2"),
    ("the RoS-KD student is more robust to PGD (L-inf 8/255) than the student alone", "RoS-KD, Table II",
     "RoS-KD", "Baseline I", "pgd_8"),
    ("RoS-KD beats adaptive per-sample weights", "RoS-KD, Table I", "RoS-KD", "Baseline IV", "accuracy"),
    ("GroupDistil raises worst-group accuracy over plain KD", "GroupDistil, Table 1", "GroupDistil",
     "RoS-KD (group data)", "worst_group_accuracy"),
    ("RoS-KD beats equal-weight multi-teacher KD when the teachers memorised the noise (last epoch)",
     "RoS-KD, Table I", "RoS-KD, teachers' last epoch", "Baseline III, teachers' last epoch", "accuracy"),
)
# the product's defaults against the former ones, decided on the validation split
DEFAULTS = (
    ("normalised Exp(1) weights (default) vs raw", "RoS-KD", "RoS-KD, raw weights"),
    ("averaging warm-up 0 (default) vs 10", "RoS-KD", "RoS-KD, averaging warm-up 10"),
    ("teachers keep their best validation epoch (select: auto, default) vs their last", "RoS-KD",
     "RoS-KD, teachers' last epoch"),
    ("subsets.layout random (default) vs shared_core", "RoS-KD", "RoS-KD, shared-core layout"),
    ("data.label_issues auto (default: with and without the flagged rows, the better on validation) vs report",
     "RoS-KD", "RoS-KD, labels as given"),
    ("the same with the teachers' last epoch", "RoS-KD, teachers' last epoch",
     "RoS-KD, teachers' last epoch, labels as given"),
)
# (regime, RoS-KD row, Baseline III row): issue 13's targets, with the product's defaults and with the teachers'
# last epoch (the memorising teachers the issue measured)
TARGETS = (
    ("defaults", "RoS-KD", "Baseline III"),
    ("teachers' last epoch", "RoS-KD, teachers' last epoch", "Baseline III, teachers' last epoch"),
)


@dataclass(frozen=True)
class Job:
    """The rows of one layout for one seed, run in one run directory."""

    seed: int
    layout: str
    work_dir: str
    epochs: int

    @property
    def run_dir(self) -> Path:
        """The run directory this job's rows share."""
        return Path(self.work_dir) / f"seed{self.seed}" / self.layout


def _accuracy(model, images, labels) -> float:
    import torch

    with torch.no_grad():
        predictions = model(images.float() / 255).argmax(1).numpy()
    return float((predictions == labels).mean())


def _pgd_accuracy(model, images, labels, eps: float, seed: int) -> float:
    import torch

    from compressor.robustness.attacks import pgd

    x, y = images.float() / 255, torch.as_tensor(labels)
    adversarial = pgd(model, x, y, eps, steps=10, generator=torch.Generator().manual_seed(seed))
    return _accuracy(model, (adversarial * 255), labels)


def _record(job: Job, label: str, metrics: dict, bundle, student_path: Path, seconds: float,
            label_issues: str) -> dict:
    """The figures of one row: clean test (from ``metrics.json``), noisy validation and, for some rows, PGD;
    ``label_issues``: what distillation did with the audit's flagged rows (the mode ``auto`` kept)."""
    from compressor.checkpoint import load_classifier

    model, _ = load_classifier(student_path)
    final = metrics["test"][metrics["final_model"]]
    record = {
        "noise": NOISE, "seed": job.seed, "row": label, "layout": job.layout, "final_model": metrics["final_model"],
        "accuracy": final["accuracy"], "f1": final["f1"],
        "val_accuracy": _accuracy(model, bundle.val.images, bundle.val.labels),
        "train_noise": metrics["noise"]["train"]["noise_rate"],
        "teacher_accuracy": [t["test"]["accuracy"] for t in metrics["teachers"]],
        "label_issues": label_issues,
        "seconds": round(seconds, 2),
    }
    if "worst_group_accuracy" in final:
        record["worst_group_accuracy"] = final["worst_group_accuracy"]
    if label in PGD_ROWS:
        for eps in PGD_EPS:
            record[f"pgd_{round(eps * 255)}"] = _pgd_accuracy(model, bundle.test.images, bundle.test.labels, eps,
                                                            job.seed)
    return record


def run_job(job: Job) -> list[dict]:
    """Run the rows of ``job`` one after another in its run directory; return one record per row."""
    import torch

    torch.set_num_threads(1)
    os.environ["COMPRESSOR_QUIET"] = "1"
    from compressor.data.prepare import prepare_data
    from compressor.io import read_json
    from compressor.pipeline.audit_stage import AUDIT_STAGE
    from compressor.pipeline.data_stage import DATA_STAGE
    from compressor.pipeline.distill_stage import DISTILL_STAGE
    from compressor.pipeline.metrics_stage import METRICS_STAGE
    from compressor.pipeline.runner import run_pipeline
    from compressor.pipeline.teachers_stage import TEACHERS_STAGE
    from compressor.run_layout import RunLayout
    from compressor.spec import parse_spec

    stages = [DATA_STAGE, TEACHERS_STAGE, AUDIT_STAGE, DISTILL_STAGE, METRICS_STAGE]
    records, bundle, group_data = [], None, None
    if job.layout == "groups":
        group_data = str(write_group_digits(job.run_dir.parent / "digits_groups.npz", seed=job.seed))
    for row in (r for r in ROWS if r.layout == job.layout):
        start = time.perf_counter()
        spec = parse_spec(row_spec(row, job.seed, job.epochs, group_data))
        run_pipeline(spec, job.run_dir, stages=stages)
        seconds = time.perf_counter() - start
        bundle = bundle or prepare_data(spec)  # the same data for every row of a seed
        layout = RunLayout(job.run_dir)
        records.append(_record(job, row.label, read_json(layout.metrics), bundle, layout.final_student, seconds,
                               read_json(layout.student_summary)["label_issues"]))
    return records


def _rows_table(records: list[dict]) -> list[str]:
    lines = ["| Row | Teachers' test accuracy | Student val accuracy (noisy labels) | Student test accuracy | "
             "PGD 2/255 | PGD 8/255 | Seeds | Seeds that dropped the flagged rows |",
             "|---|---|---|---|---|---|---|---|"]
    for row in ROWS:
        rs = sorted((r for r in records if r["row"] == row.label), key=lambda r: r["seed"])
        teachers = mean_std(statistics.fmean(r["teacher_accuracy"]) for r in rs if r["teacher_accuracy"])
        pgd = [mean_std(r[k] for r in rs if k in r) for k in ("pgd_2", "pgd_8")]
        lines.append(f"| {row.label} | {teachers} | {mean_std(r['val_accuracy'] for r in rs)} | "
                     f"{mean_std(r['accuracy'] for r in rs)} | {pgd[0]} | {pgd[1]} | {len(rs)} | "
                     f"{sum(r.get('label_issues') == 'drop' for r in rs)} |")
    return lines


def _claims_table(records: list[dict]) -> list[str]:
    lines = ["| Claim | Paper | Metric | Δ (A − B), mean ± std (seeds A > B) | Verdict |", "|---|---|---|---|---|"]
    for claim, paper, row_a, row_b, metric in CLAIMS:
        delta, verdict = claim_check(records, NOISE, row_a, row_b, metric)
        shown = {"teachers_accuracy": "test accuracy vs the teachers' mean"}.get(metric, f"test {metric}")
        lines.append(f"| {claim} (A = {row_a}, B = {'its teachers' if metric == 'teachers_accuracy' else row_b}) "
                     f"| {paper} | {shown} | {delta} | {verdict} |")
    return lines


def _defaults_table(records: list[dict]) -> list[str]:
    lines = ["| Default | Δ val accuracy (decides) | Δ test accuracy (reported) |", "|---|---|---|"]
    for what, row_a, row_b in DEFAULTS:
        val, _ = claim_check(records, NOISE, row_a, row_b, "val_accuracy")
        test, _ = claim_check(records, NOISE, row_a, row_b, "accuracy")
        lines.append(f"| {what} | {val} | {test} |")
    return lines


def _targets(records: list[dict]) -> list[str]:
    def acc(row: str) -> dict[int, float]:
        return {r["seed"]: r["accuracy"] for r in records if r["row"] == row}

    lines = []
    for regime, roskd_row, b3_row in TARGETS:
        roskd, b1, b3 = acc(roskd_row), acc("Baseline I"), acc(b3_row)
        if not roskd:
            lines.append(f"- {regime}: {roskd_row} did not run.")
            continue
        mean = statistics.fmean(roskd.values())
        over = [statistics.fmean(roskd[s] - b[s] for s in roskd if s in b) if b else float("nan") for b in (b3, b1)]
        lines.append(
            f"- {regime}: {roskd_row} mean test accuracy {mean:.3f} over {len(roskd)} seeds (target ≥ 0.92: "
            f"{'met' if mean >= 0.92 else 'not met'}); over {b3_row} {over[0] * 100:+.1f} points (target ≥ +5: "
            f"{'met' if over[0] >= 0.05 else 'not met'}); over Baseline I {over[1] * 100:+.1f} points "
            f"(target ≥ +15: {'met' if over[1] >= 0.15 else 'not met'}).")
    return ["Acceptance figures of issue 13:", "", *lines]


def results_markdown(records: list[dict], header: list[str]) -> str:
    """The fragment: header, the rows, the claims with paired deltas, the defaults on validation, the targets."""
    lines = [*header, "", *_rows_table(records), "",
             "Claims, checked on paired runs (same seed: same split, noise and, within a layout, the same teachers); "
             "reproduced = A > B on every seed, not reproduced = mean Δ ≤ 0, mixed otherwise:", "",
             *_claims_table(records), "",
             "The product's defaults against the former ones (paired by seed; the decision reads validation):", "",
             *_defaults_table(records), "", *_targets(records)]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Command line: run every job, write the results fragment and the JSON; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--layouts", nargs="+", choices=LAYOUTS, default=list(LAYOUTS))
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--epochs", type=int, default=EPOCHS)
    parser.add_argument("--work-dir", type=Path, default=ROOT / "runs" / "quality-converged")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "quality-converged.md")
    parser.add_argument("--json", type=Path, default=HERE / "results-converged.json")
    parser.add_argument("--quick", action="store_true", help="1 seed, 2 epochs: a smoke run, not a measurement")
    args = parser.parse_args(argv)
    if args.quick:
        args.seeds, args.epochs = args.seeds[:1], 2

    from compressor.bench.report import cpu_model, git_commit
    from compressor.io import write_json, write_text

    if args.work_dir.exists():
        shutil.rmtree(args.work_dir)  # a measurement starts from nothing: no teacher is reused from a past run
    # layout by layout over every seed (LAYOUTS' order): an interrupted run has the first layouts for every seed
    jobs = [Job(s, layout, str(args.work_dir), args.epochs) for layout in args.layouts for s in args.seeds]
    command = COMMAND + ("" if argv is None and len(sys.argv) == 1 else " " + " ".join(argv or sys.argv[1:]))
    start, records, commit = time.perf_counter(), [], git_commit() or "unknown"  # the code the workers run

    def write(done: int) -> None:
        wall = time.perf_counter() - start
        header = [
            "## Quality benchmark, converged regime: digits, 40% symmetric noise, 60 epochs per model",
            "",
            f"Produced by `{command}` (commit {commit}); machine: {cpu_model()}, "
            f"{os.cpu_count()} cores, {args.workers} worker processes x 1 torch thread; {done}/{len(jobs)} jobs in "
            f"{wall / 60:.1f} min.",
            f"Set-up: 1257 train / 180 val / 360 test; 5 small_cnn_wide teachers (210k parameters) on random subsets "
            f"with overlap 0.4 (Baseline III: all data; Baseline II / messy: one teacher on all data); small_cnn "
            f"student (24k parameters); {args.epochs} epochs each, SGD 0.05, momentum 0.9, weight decay 2e-4, lr / 10 "
            f"at {args.epochs // 2} and {args.epochs * 3 // 4}, no augmentation; tau 4, alpha 0.9. Mean ± sample "
            f"std over seeds {args.seeds}; val accuracy is against the noisy val labels, test against clean ones.",
        ]
        if args.quick:
            header.insert(2, "**Smoke run (--quick): 2 epochs, 1 seed. Not a measurement.**")
        write_text(args.out, results_markdown(records, header))
        write_json(args.json, {"command": command, "wall_seconds": round(wall, 1), "jobs_done": done,
                               "jobs": len(jobs), "seeds": args.seeds, "epochs": args.epochs, "records": records})

    pool = ProcessPoolExecutor(args.workers, mp_context=multiprocessing.get_context("spawn"))
    with pool:
        futures = {pool.submit(run_job, job): job for job in jobs}
        for done, future in enumerate(as_completed(futures), 1):
            records += future.result()
            write(done)
            job = futures[future]
            print(f"[{(time.perf_counter() - start) / 60:.1f} min] seed {job.seed} {job.layout}: done "
                  f"({done}/{len(jobs)})", flush=True)
    print(f"wrote {args.out} and {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
