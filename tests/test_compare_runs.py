"""The paired comparison of two quality-benchmark runs (benchmarks/quality/compare_runs.py)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks" / "quality"))

from compare_runs import main, paired_rows, verdict  # noqa: E402


def _records(row: str, accuracies: dict[int, float]) -> list[dict]:
    return [{"noise": "symmetric-40", "row": row, "seed": s, "accuracy": a} for s, a in accuracies.items()]


def test_pairs_by_seed_and_ignores_unpaired_seeds():
    a = _records("RoS-KD", {0: 0.90, 1: 0.92, 2: 0.95, 7: 0.50})
    b = _records("RoS-KD", {2: 0.94, 1: 0.90, 0: 0.91})
    (entry,) = paired_rows(a, b)
    assert entry["seeds"] == [0, 1, 2]
    assert [round(d, 3) for d in entry["deltas"]] == [-0.01, 0.02, 0.01]


def test_verdict_needs_both_a_significant_test_and_a_gap_beyond_the_seed_spread():
    same = paired_rows(_records("r", {0: 0.90, 1: 0.92, 2: 0.94}), _records("r", {0: 0.91, 1: 0.91, 2: 0.94}))
    assert verdict(same[0]) == "within seed noise"
    better = paired_rows(_records("r", {0: 0.95, 1: 0.96, 2: 0.97, 3: 0.98}),
                         _records("r", {0: 0.90, 1: 0.905, 2: 0.92, 3: 0.925}))
    assert verdict(better[0]) == "A better"
    two = paired_rows(_records("r", {0: 0.99, 1: 0.99}), _records("r", {0: 0.5, 1: 0.6}))
    assert verdict(two[0]) == "too few seeds to tell"


def test_runs_without_a_common_row_exit_2(tmp_path, capsys):
    for name, row in (("a.json", "x"), ("b.json", "y")):
        (tmp_path / name).write_text(json.dumps({"records": _records(row, {0: 0.9})}))
    assert main([str(tmp_path / "a.json"), str(tmp_path / "b.json")]) == 2
    assert "share no" in capsys.readouterr().err
