"""The converged-regime quality benchmark's specs and report (benchmarks/quality), without training anything."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks" / "quality"))

from converged_rows import LAYOUTS, ROWS, row_spec  # noqa: E402
from run_converged import results_markdown  # noqa: E402

from compressor.spec import parse_spec  # noqa: E402


@pytest.mark.parametrize("row", ROWS, ids=[r.label for r in ROWS])
def test_every_row_is_a_valid_spec_of_the_regime(row):
    spec = parse_spec(row_spec(row, seed=3, group_data="groups.npz"))
    assert spec.seed == 3 and spec.student.arch == "small_cnn" and spec.distillation.training.epochs == 60
    assert spec.distillation.training.augment.crop_padding == 0
    if row.layout.startswith("overlap"):
        layout = "shared_core" if row.layout == "overlap_core" else "random"
        assert (spec.subsets.count, spec.subsets.overlap, spec.subsets.layout) == (5, 0.4, layout)
    if row.layout.startswith("full"):
        assert spec.subsets.overlap == 1.0 and spec.distillation.weighting in ("equal", "adaptive")
    assert spec.teachers.training.select == ("last" if row.layout.endswith("_last") else "auto")
    if row.layout == "none":
        assert not spec.distillation.uses_teachers


def test_rows_of_a_layout_share_their_teachers():
    teachers = {}
    for row in ROWS:
        spec = parse_spec(row_spec(row, seed=0, group_data="groups.npz"))
        key = (spec.subsets.model_dump_json(), spec.teachers.model_dump_json())
        teachers.setdefault(row.layout, set()).add(key)
    assert set(teachers) == set(LAYOUTS) and all(len(keys) == 1 for keys in teachers.values())


def _record(row: str, seed: int, accuracy: float, val: float) -> dict:
    return {"noise": "symmetric-40", "seed": seed, "row": row, "accuracy": accuracy, "val_accuracy": val,
            "teacher_accuracy": [0.7], "pgd_2": accuracy - 0.1, "pgd_8": accuracy - 0.3}


def test_report_pairs_by_seed_and_checks_the_targets():
    records = [_record("RoS-KD", s, a, 0.5) for s, a in ((0, 0.93), (1, 0.95))]
    records += [_record("Baseline III", s, a, 0.5) for s, a in ((0, 0.90), (1, 0.85))]
    records += [_record("Baseline I", s, a, 0.5) for s, a in ((0, 0.70), (1, 0.75))]
    text = results_markdown(records, ["header"])
    line = next(x for x in text.splitlines() if x.startswith("| RoS-KD beats equal-weight"))
    assert "0.065 ± 0.049 (2/2 seeds) | reproduced" in line  # deltas 0.03 and 0.10, paired by seed
    assert "RoS-KD mean test accuracy 0.940 over 2 seeds (target ≥ 0.92: met)" in text
    assert "over Baseline III +6.5 points (target ≥ +5: met)" in text
    assert "over Baseline I +21.5 points (target ≥ +15: met)" in text
    messy = next(x for x in text.splitlines() if x.startswith("| messy collaboration"))
    assert messy.endswith("| not run |")  # rows that did not run say so
