"""Markdown tables of the quality benchmark: per-row mean +- std over seeds, and the papers' claims checked.

Records are one dict per (noise setting, seed, row) as ``run_quality.py`` collects them. Standard deviations are
sample standard deviations over the seeds (ddof 1). A claim "A beats B" is checked per seed on paired runs (same
seed, so the same data split, label noise and, where the rows share a layout, the same teachers): *reproduced*
when A > B on every seed, *not reproduced* when the mean difference is <= 0, *mixed* otherwise.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable

from rows import GROUP_REFERENCE, MAIN_ROWS, NOISE_SETTINGS

NOISE_TITLES = {"symmetric-40": "(a) 40% symmetric label noise", "pairflip-30": "(b) 30% pair-flip label noise"}

# (claim, paper, row A, row B, metric); metric "teachers_accuracy" is the mean test accuracy of row B's teachers.
CLAIMS = (
    ("RoS-KD beats single-teacher KD", "RoS-KD, Table I", "RoS-KD", "Baseline II", "f1"),
    ("RoS-KD beats equal-weight multi-teacher KD", "RoS-KD, Table I", "RoS-KD", "Baseline III", "f1"),
    ("RoS-KD beats adaptive per-sample weights", "RoS-KD, Table I", "RoS-KD", "Baseline IV", "f1"),
    ("RoS-KD beats the student trained alone", "RoS-KD, Table I", "RoS-KD", "Baseline I", "f1"),
    ("smooth parameter averaging helps", "RoS-KD, Table I (V vs RoS-KD)", "RoS-KD", "Baseline V", "f1"),
    ("overlapping subsets + stochastic weights beat equal weights on all data", "RoS-KD, Table I (V vs III)",
     "Baseline V", "Baseline III", "f1"),
    ("the RoS-KD student beats its own teachers", "noise in KD, Fig. 9 (KD vs teacher)", "RoS-KD", "RoS-KD",
     "teachers_accuracy"),
    ("KD beats the student trained alone under label noise", "noise in KD, Fig. 9", "Baseline II", "Baseline I",
     "accuracy"),
    ("messy collaboration (MC-S, r = 0.5) beats Hinton KD under label noise", "noise in KD, Fig. 10",
     "Messy collaboration", "Baseline II", "accuracy"),
    ("confident knowledge selection (CMD-P gate) beats all knowledge", "CMD, Tables 1 and 3", "RoS-KD + CMD",
     "RoS-KD", "accuracy"),
    ("GroupDistil raises worst-group accuracy over plain KD", "GroupDistil, Table 1", "GroupDistil",
     GROUP_REFERENCE, "worst_group_accuracy"),
)


def mean_std(values: Iterable[float]) -> str:
    """``mean +- std`` with three decimals (std over the values, ddof 1; 0 for a single value)."""
    values = list(values)
    if not values:
        return "-"
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):.3f} ± {std:.3f}"


def _records(records: list[dict], noise: str, row: str) -> list[dict]:
    return sorted((r for r in records if r["noise"] == noise and r["row"] == row), key=lambda r: r["seed"])


def _teacher_noise(records: list[dict]) -> str:
    """The realised noise rate of the labels each teacher was trained on, mean over seeds, per teacher."""
    if not records or not records[0]["teacher_noise"]:
        return "— (no teacher)"
    per_teacher = zip(*(r["teacher_noise"] for r in records), strict=True)
    return " / ".join(f"{statistics.fmean(rates):.2f}" for rates in per_teacher)


def main_table(records: list[dict], noise: str) -> list[str]:
    """Markdown lines of the Table-I-style comparison for one noise setting."""
    lines = [
        "| Row | Noise rate of each teacher's training labels | Teachers' accuracy | Student accuracy | "
        "Student macro F1 |",
        "|---|---|---|---|---|",
    ]
    for row in MAIN_ROWS:
        rs = _records(records, noise, row)
        teachers = mean_std(statistics.fmean(r["teacher_accuracy"]) for r in rs if r["teacher_accuracy"])
        label = f"{row} ¹" if row == "GroupDistil" else row
        lines.append(f"| {label} | {_teacher_noise(rs)} | {teachers} | {mean_std(r['accuracy'] for r in rs)} | "
                     f"{mean_std(r['f1'] for r in rs)} |")
    return lines


def group_table(records: list[dict]) -> list[str]:
    """Markdown lines comparing GroupDistil with plain RoS-KD on the group-imbalanced digits."""
    lines = ["| Noise | Row | Accuracy | Macro F1 | Worst-group accuracy | Majority accuracy | Final minority weight |",
             "|---|---|---|---|---|---|---|"]
    for noise in NOISE_SETTINGS:
        for row in ("GroupDistil", GROUP_REFERENCE):
            rs = _records(records, noise, row)
            weights = [r["group_weights"][1] for r in rs if r.get("group_weights")]
            lines.append(
                f"| {noise} | {row} | {mean_std(r['accuracy'] for r in rs)} | {mean_std(r['f1'] for r in rs)} | "
                f"{mean_std(r['worst_group_accuracy'] for r in rs)} | "
                f"{mean_std(r['group_accuracy']['0'] for r in rs)} | {mean_std(weights) if weights else '—'} |"
            )
    return lines


def _value(record: dict, metric: str) -> float:
    if metric == "teachers_accuracy":
        return statistics.fmean(record["teacher_accuracy"])
    return record[metric]


def claim_check(records: list[dict], noise: str, row_a: str, row_b: str, metric: str) -> tuple[str, str]:
    """``(paired difference mean +- std and wins, verdict)`` of "A beats B" on ``metric`` for one noise setting."""
    a, b = _records(records, noise, row_a), _records(records, noise, row_b)
    pairs = [(ra, rb) for ra in a for rb in b if ra["seed"] == rb["seed"]]
    if not pairs:
        return "-", "not run"
    metric_a = "accuracy" if metric == "teachers_accuracy" else metric
    deltas = [_value(ra, metric_a) - _value(rb, metric) for ra, rb in pairs]
    wins = sum(d > 0 for d in deltas)
    mean = statistics.fmean(deltas)
    verdict = "reproduced" if wins == len(deltas) else ("not reproduced" if mean <= 0 else "mixed")
    return f"{mean_std(deltas)} ({wins}/{len(deltas)} seeds)", verdict


def claims_table(records: list[dict]) -> list[str]:
    """Markdown lines: each paper claim, the paired difference per noise setting and a verdict."""
    header = "| Claim | Paper | Metric | " + " | ".join(f"{n}: Δ (A − B) | verdict" for n in NOISE_SETTINGS) + " |"
    lines = [header, "|---|---|---|" + "---|---|" * len(NOISE_SETTINGS)]
    for claim, paper, row_a, row_b, metric in CLAIMS:
        cells = []
        for noise in NOISE_SETTINGS:
            delta, verdict = claim_check(records, noise, row_a, row_b, metric)
            cells += [delta, verdict]
        shown = "teacher accuracy (mean)" if metric == "teachers_accuracy" else metric.replace("_", " ")
        what = f"{claim} (A = {row_a}, B = {'its teachers' if metric == 'teachers_accuracy' else row_b})"
        lines.append(f"| {what} | {paper} | {shown} | " + " | ".join(cells) + " |")
    return lines


def results_markdown(records: list[dict], header: list[str]) -> str:
    """The whole results fragment: ``header`` lines, one table per noise setting, GroupDistil and the claims."""
    lines = list(header)
    for noise in NOISE_SETTINGS:
        lines += ["", f"### {NOISE_TITLES[noise]}", ""] + main_table(records, noise)
    lines += ["", "¹ GroupDistil runs on the group-imbalanced digits variant (10% inverted-contrast minority in "
              "train/val, balanced test split), so its figures compare with the next table, not with the rows "
              "above it.", "", "### GroupDistil on group-imbalanced digits", ""] + group_table(records)
    lines += ["", "### The papers' claims, checked on paired runs (same seed, data split and noise)", ""]
    lines += claims_table(records)
    return "\n".join(lines) + "\n"
