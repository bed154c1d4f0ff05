"""Quality benchmark: a Table-I-style comparison of the four papers' methods on noisily labelled digits.

One command runs every row of ``rows.py`` on scikit-learn's digits under (a) 40% symmetric and (b) 30% pair-flip
label noise, for 3 seeds, and writes the tables (mean +- std over seeds) to ``benchmarks/results/quality.md`` and
the per-run figures to ``benchmarks/quality/results.json``:

    .venv/bin/python benchmarks/quality/run_quality.py

Runs go through the real pipeline (``compressor.pipeline.run_pipeline``: data, teachers, distill, metrics stages).
Each (noise, seed, layout) is one job in its own run directory, so rows sharing teachers train them once; jobs run
in ``--workers`` processes with one torch thread each (on a small CPU, one thread per process is far faster than
torch's default of one thread per core). ``--quick`` (1 seed, 2 epochs) only checks that everything runs.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import platform
import shutil
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE))

from group_digits import write_group_digits  # noqa: E402
from report import results_markdown  # noqa: E402
from rows import LAYOUTS, NOISE_SETTINGS, ROWS, row_spec  # noqa: E402

COMMAND = ".venv/bin/python benchmarks/quality/run_quality.py"


@dataclass(frozen=True)
class Job:
    """The rows of one layout for one noise setting and seed, run in one run directory."""

    noise: str
    seed: int
    layout: str
    work_dir: str
    teacher_epochs: int
    student_epochs: int
    impl: str = "auto"
    view_pool: int | str = "auto"

    @property
    def run_dir(self) -> Path:
        """The run directory this job's rows share."""
        return Path(self.work_dir) / self.noise / f"seed{self.seed}" / self.layout


def _record(job: Job, label: str, metrics: dict, seconds: float) -> dict:
    """The figures of one row from its ``metrics.json``."""
    final = metrics["test"][metrics["final_model"]]
    record = {
        "noise": job.noise, "seed": job.seed, "row": label, "layout": job.layout,
        "final_model": metrics["final_model"], "accuracy": final["accuracy"], "f1": final["f1"],
        "train_noise": metrics["noise"]["train"]["noise_rate"],
        "teacher_noise": [t["subset_noise_rate"] for t in metrics["teachers"]],
        "teacher_accuracy": [t["test"]["accuracy"] for t in metrics["teachers"]],
        "gate_pass_rate": metrics["distillation"].get("gate_pass_rate"),
        "group_weights": metrics["distillation"].get("group_weights"),
        "seconds": round(seconds, 2),
    }
    if "worst_group_accuracy" in final:
        record.update(worst_group_accuracy=final["worst_group_accuracy"], group_accuracy=final["group_accuracy"])
    return record


def run_job(job: Job) -> list[dict]:
    """Run the rows of ``job`` one after another in its run directory; return one record per row."""
    import torch

    torch.set_num_threads(1)
    os.environ["COMPRESSOR_QUIET"] = "1"
    os.environ["COMPRESSOR_IMPL"] = job.impl  # which implementation of the fused ops (same contract, any choice)
    from compressor.io import read_json
    from compressor.pipeline.audit_stage import AUDIT_STAGE
    from compressor.pipeline.data_stage import DATA_STAGE
    from compressor.pipeline.distill_stage import DISTILL_STAGE
    from compressor.pipeline.metrics_stage import METRICS_STAGE
    from compressor.pipeline.runner import run_pipeline
    from compressor.pipeline.teachers_stage import TEACHERS_STAGE
    from compressor.spec import parse_spec

    stages = [DATA_STAGE, TEACHERS_STAGE, AUDIT_STAGE, DISTILL_STAGE, METRICS_STAGE]
    group_data = None
    if job.layout == "groups":
        group_data = str(write_group_digits(job.run_dir.parent / "digits_groups.npz", seed=job.seed))
    records = []
    for row in (r for r in ROWS if r.layout == job.layout):
        start = time.perf_counter()
        spec = parse_spec(row_spec(row, job.noise, job.seed, group_data, job.teacher_epochs, job.student_epochs,
                                   job.view_pool))
        run_pipeline(spec, job.run_dir, stages=stages)
        records.append(_record(job, row.label, read_json(job.run_dir / "metrics.json"), time.perf_counter() - start))
    return records


def machine_description(workers: int) -> str:
    """CPU model, core count, torch version and the load on the machine (other work shares it)."""
    import torch

    from compressor.bench.report import cpu_model

    return (f"{cpu_model()}, {os.cpu_count()} CPU cores, {platform.system()} {platform.release()}, Python "
            f"{platform.python_version()}, torch {torch.__version__}; {workers} worker processes x 1 torch thread")


def impl_note(impl: str) -> str:
    """What ``--impl`` means for the figures."""
    if impl == "reference":
        return ("Fused ops: the pure-PyTorch reference implementation (`--impl reference`; same contract as the C++ "
                "op, chosen so that a concurrent rebuild of the C++ extension on this shared machine cannot crash "
                "the run; implementations agree to floating-point rounding).")
    return f"Fused ops: implementation `{impl}` (compressor/ops.py)."


def main(argv: list[str] | None = None) -> int:
    """Command line: run every job, write the results fragment and the JSON; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--noise", choices=list(NOISE_SETTINGS), nargs="+", default=list(NOISE_SETTINGS))
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--teacher-epochs", type=int, default=20)
    parser.add_argument("--student-epochs", type=int, default=30)
    parser.add_argument("--work-dir", type=Path, default=ROOT / "runs" / "quality")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "quality.md")
    parser.add_argument("--json", type=Path, default=HERE / "results.json")
    parser.add_argument("--impl", default="auto", choices=["auto", "reference", "cpp", "cuda", "triton"],
                        help="implementation of the fused ops (all share one contract; see compressor/ops.py)")
    parser.add_argument("--view-pool", default="auto", type=lambda v: v if v == "auto" else int(v),
                        help="distillation.view_pool of every row: auto (the default: teachers' outputs on stored "
                             "views) or 0 (teachers run live on every batch)")
    parser.add_argument("--quick", action="store_true", help="1 seed, 2 epochs: a smoke run, not a measurement")
    args = parser.parse_args(argv)
    if args.quick:
        args.seeds, args.teacher_epochs, args.student_epochs = args.seeds[:1], 2, 2

    from compressor.bench.report import git_commit
    from compressor.io import write_json, write_text
    from compressor.progress import console, progress_bar

    if args.work_dir.exists():
        shutil.rmtree(args.work_dir)  # a measurement starts from nothing: no teacher is reused from a past run
    jobs = [Job(n, s, layout, str(args.work_dir), args.teacher_epochs, args.student_epochs, args.impl, args.view_pool)
            for n in args.noise for s in args.seeds for layout in LAYOUTS]
    load_start = os.getloadavg()[0]
    start = time.perf_counter()
    records: list[dict] = []
    # spawn: workers start clean (no fork of a process with live threads such as the progress bar's)
    pool = ProcessPoolExecutor(args.workers, mp_context=multiprocessing.get_context("spawn"))
    with pool, progress_bar("quality benchmark", len(jobs)) as bar:
        futures = {pool.submit(run_job, job): job for job in jobs}
        for future in as_completed(futures):
            job = futures[future]
            records += future.result()
            bar.advance()
            bar.note(f"{job.noise} seed {job.seed} {job.layout}")
    wall = time.perf_counter() - start
    load_end = os.getloadavg()[0]

    command = COMMAND + ("" if argv is None and len(sys.argv) == 1 else " " + " ".join(argv or sys.argv[1:]))
    header = [
        "## Quality benchmark: the four papers' methods on noisily labelled digits",
        "",
        f"Produced by `{command}` (commit {git_commit() or 'unknown'}).",
        f"Machine: {machine_description(args.workers)}. 1-minute load average {load_start:.1f} at the start, "
        f"{load_end:.1f} at the end (the run's own workers included). {impl_note(args.impl)}",
        f"Wall time: {wall / 60:.1f} min for {len(jobs)} jobs ({len(args.noise)} noise settings x "
        f"{len(args.seeds)} seeds x {len(LAYOUTS)} teacher layouts, {len(ROWS)} rows per noise setting and seed).",
        f"Set-up: scikit-learn digits (8x8, 10 classes; 1257 train / 180 val / 360 test, clean test labels); "
        f"label noise on train/val only; teachers small_cnn_wide, wrn16_2, small_cnn ({args.teacher_epochs} "
        f"epochs, SGD 0.05 cosine, crop augmentation) on 3 subsets with overlap 0.4 (Baselines III/IV: overlap 1; "
        f"Baseline II: one wrn16_2 on all data); student tiny_cnn (6k parameters, {args.student_epochs} epochs); "
        f"alpha 0.9, tau 4; averaging after {args.student_epochs // 3} warm-up epochs (RoS-KD rows); teacher view pool "
        f"`{args.view_pool}`{' (teachers run live)' if args.view_pool == 0 else ''}. Accuracy and "
        f"macro F1 of the final student on the clean test split, mean ± std over seeds {args.seeds}.",
    ]
    if args.quick:
        header.insert(2, "**Smoke run (--quick): 2 epochs, 1 seed. Not a measurement.**")
    write_text(args.out, results_markdown(records, header))
    write_json(args.json, {"command": command, "wall_seconds": round(wall, 1), "load_average": [load_start, load_end],
                           "seeds": args.seeds, "view_pool": args.view_pool, "teacher_epochs": args.teacher_epochs,
                           "student_epochs": args.student_epochs, "records": records})
    console.print(f"wrote {args.out} and {args.json} in {wall / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
