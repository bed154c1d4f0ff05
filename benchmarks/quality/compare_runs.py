"""Paired comparison of two quality-benchmark runs that differ in one setting (e.g. the teacher view pool on / off).

Both JSON files come from ``run_quality.py`` over the same seeds and noise settings. For every row and noise setting
the difference A − B of test accuracy is paired by seed; the verdict compares it with the seed noise: a paired t-test
(``scipy.stats.ttest_rel``) and the spread of the row itself over seeds in run B.

    .venv/bin/python benchmarks/quality/compare_runs.py A.json B.json --labels "pool on" "pool off" --out table.md
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

from report import mean_std
from scipy import stats


def _by_key(records: list[dict]) -> dict[tuple[str, str, int], float]:
    return {(r["noise"], r["row"], r["seed"]): r["accuracy"] for r in records}


def paired_rows(a: list[dict], b: list[dict]) -> list[dict]:
    """One entry per (noise, row) present in both runs: the paired deltas and the seed spread of each run."""
    acc_a, acc_b = _by_key(a), _by_key(b)
    groups: dict[tuple[str, str], list[int]] = {}
    for noise, row, seed in acc_a:
        if (noise, row, seed) in acc_b:
            groups.setdefault((noise, row), []).append(seed)
    out = []
    for (noise, row), seeds in groups.items():
        seeds.sort()
        xa = [acc_a[noise, row, s] for s in seeds]
        xb = [acc_b[noise, row, s] for s in seeds]
        deltas = [x - y for x, y in zip(xa, xb, strict=True)]
        p = float(stats.ttest_rel(xa, xb).pvalue) if len(seeds) > 1 and any(deltas) else 1.0
        out.append({"noise": noise, "row": row, "seeds": seeds, "a": xa, "b": xb, "deltas": deltas, "p": p})
    return out


def _sd(values: list[float]) -> float:
    return statistics.stdev(values) if len(values) > 1 else 0.0


def verdict(entry: dict) -> str:
    """``within seed noise`` unless the paired t-test rejects equality at 5% and the mean difference is larger
    than the row's seed-to-seed spread."""
    if len(entry["deltas"]) < 3:
        return "too few seeds to tell"
    mean = statistics.fmean(entry["deltas"])
    spread = max(_sd(entry["a"]), _sd(entry["b"]))
    if entry["p"] < 0.05 and abs(mean) > spread:
        return "A better" if mean > 0 else "B better"
    return "within seed noise"


def markdown(entries: list[dict], label_a: str, label_b: str) -> str:
    """The comparison as a markdown table."""
    lines = [f"| noise | row | {label_a} | {label_b} | Δ ({label_a} − {label_b}), paired | paired t-test p | verdict |",
             "|---|---|---|---|---|---|---|"]
    for e in entries:
        d = e["deltas"]
        lines.append(
            f"| {e['noise']} | {e['row']} | {mean_std(e['a'])} | {mean_std(e['b'])} | "
            f"{statistics.fmean(d):+.3f} ± {_sd(d):.3f} "
            f"({sum(x > 0 for x in d)}/{len(d)} seeds A higher) | {e['p']:.2f} | {verdict(e)} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Command line: print (and optionally write) the paired table; exit 2 when the runs share no row and seed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("a", type=Path)
    parser.add_argument("b", type=Path)
    parser.add_argument("--labels", nargs=2, default=["A", "B"])
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    entries = paired_rows(json.loads(args.a.read_text())["records"], json.loads(args.b.read_text())["records"])
    if not entries:
        print(f"error: {args.a} and {args.b} share no (noise, row, seed)", file=sys.stderr)
        return 2
    text = markdown(entries, *args.labels)
    print(text, end="")
    if args.out:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
