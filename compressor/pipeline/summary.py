"""The short summary table printed at the end of ``compressor run``."""

from __future__ import annotations

from pathlib import Path

from rich.table import Table

from compressor.io import read_json
from compressor.pipeline.stage import StageResult


def _fmt(value) -> str:
    return "-" if value is None else f"{value:.4f}"


def summary_table(run_dir: str | Path) -> Table:
    """Models (teachers, student, averaged student) with parameters and clean-test metrics from ``metrics.json``."""
    run_dir = Path(run_dir)
    metrics = read_json(run_dir / "metrics.json")
    table = Table(title=f"compressor run: {run_dir}", title_justify="left")
    for column in ("model", "arch", "params", "train noise", "accuracy", "macro F1", "AUC"):
        table.add_column(column, justify="left" if column in ("model", "arch") else "right")
    for teacher in metrics["teachers"]:
        test = teacher["test"]
        table.add_row(teacher["name"], teacher["arch"], f"{teacher['params']:,}", f"{teacher['subset_noise_rate']:.2f}",
                      _fmt(test["accuracy"]), _fmt(test["f1"]), _fmt(test["auc"]))
    student = metrics["student"]
    noise = metrics["noise"]["train"]["noise_rate"]
    for name in ("student", "student_averaged"):
        if name in metrics["test"]:
            test = metrics["test"][name]
            label = f"{name} (final)" if name == metrics["final_model"] else name
            table.add_row(label, student["arch"], f"{student['params']:,}", f"{noise:.2f}",
                          _fmt(test["accuracy"]), _fmt(test["f1"]), _fmt(test["auc"]))
    return table


def stage_table(results: list[StageResult]) -> Table:
    """One row per stage: ran / skipped / disabled, and seconds."""
    table = Table(title="stages", title_justify="left")
    table.add_column("stage")
    table.add_column("status")
    table.add_column("seconds", justify="right")
    for r in results:
        table.add_row(r.name, r.status, f"{r.seconds:.1f}" if r.status == "ran" else "")
    return table
