"""The short summary table printed at the end of ``compressor run``."""

from __future__ import annotations

from pathlib import Path

from rich.table import Table

from compressor.io import read_json
from compressor.pipeline.stage import StageResult
from compressor.run_layout import RunLayout


def _fmt(value) -> str:
    return "-" if value is None else f"{value:.4f}"


def summary_table(run_dir: str | Path) -> Table:
    """Models (teachers, student, averaged student, mutual peer) with parameters and clean-test metrics.

    A worst-group accuracy column is added when the test split has group labels (GroupDistil).
    """
    run_dir = Path(run_dir)
    metrics = read_json(RunLayout(run_dir).metrics)
    grouped = any("worst_group_accuracy" in m for m in metrics["test"].values())
    table = Table(title=f"compressor run: {run_dir}", title_justify="left")
    columns = ["model", "arch", "params", "train noise", "accuracy", "macro F1", "AUC"]
    for column in columns + (["worst group"] if grouped else []):
        table.add_column(column, justify="left" if column in ("model", "arch") else "right")

    def row(label: str, arch: str, params, noise: float, test: dict) -> None:
        """One model's row."""
        cells = [label, arch, "-" if params is None else f"{params:,}", f"{noise:.2f}", _fmt(test["accuracy"]),
                 _fmt(test["f1"]), _fmt(test["auc"])]
        table.add_row(*cells, *([_fmt(test.get("worst_group_accuracy"))] if grouped else []))

    for teacher in metrics["teachers"]:
        row(teacher["name"], teacher["arch"], teacher["params"], teacher["subset_noise_rate"], teacher["test"])
    student = metrics["student"]
    noise = metrics["noise"]["train"]["noise_rate"]
    for name in ("student", "student_averaged"):
        if name in metrics["test"]:
            label = f"{name} (final)" if name == metrics["final_model"] else name
            row(label, student["arch"], student["params"], noise, metrics["test"][name])
    if "peer" in metrics["test"]:
        row("peer (mutual)", student.get("peer_arch") or student["arch"], student.get("peer_params"), noise,
            metrics["test"]["peer"])
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
