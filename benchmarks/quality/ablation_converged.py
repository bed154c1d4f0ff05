"""Ablation of RoS-KD in the converged regime: where the product's RoS-KD loses to a minimal reference, and why.

The regime (issue 13): scikit-learn digits, 40% symmetric label noise, five ``small_cnn_wide`` teachers on subsets
with overlap 0.4, a ``small_cnn`` student, 60 epochs for each model (SGD lr 0.05, momentum 0.9, lr / 10 at epochs
30 and 45, batch 64, no augmentation), tau 4, alpha 0.9. Models train to convergence and memorise the noise.

    .venv/bin/python benchmarks/quality/ablation_converged.py --seeds 0 1 2 3 4 --reference-seeds 0 1 2

Three parts, each a markdown table (mean ± sample std over seeds; deltas are paired, per seed, against the part's
first arm):

1. **product**: the real pipeline (``run_pipeline``: data, teachers, distill, metrics) with rows Baseline I, III,
   V and RoS-KD, as the product was (``subsets.layout: shared_core``, averaging warm-up 10, teacher weights
   normalised to sum to one), with ``layout: random``, then also ``distillation.averaging.warmup_epochs: 0`` (the
   product's defaults now), then also the paper's unnormalised ``Exp(1)`` teacher weights
   (``distillation.weight_scale: raw``).
2. **reference -> product**: the minimal reference (``reference_roskd.py``) with one factor at a time set to the
   product's value, and with all of them.
3. **distillation factors**: the reference code with every factor at the product's value but the random layout,
   then one distillation choice at a time (teachers shared within a seed).

Jobs run in ``--workers`` processes (one torch thread each); the product part writes run directories under
``--work-dir``.
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
from dataclasses import replace
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE))

from reference_roskd import Config, product_config  # noqa: E402

COMMAND = ".venv/bin/python benchmarks/quality/ablation_converged.py"
ROWS = ("Baseline I", "Baseline III", "Baseline V", "RoS-KD")

# part 1: (arm label, subsets.layout, averaging warm-up, distillation.weight_scale)
PRODUCT_ARMS = (
    ("product as it was: shared_core, warm-up 10, normalised weights", "shared_core", 10, "normalised"),
    ("layout: random", "random", 10, "normalised"),
    ("layout: random, warm-up 0 (the defaults now)", "random", 0, "normalised"),
    ("layout: random, warm-up 0, raw Exp(1) weights", "random", 0, "raw"),
)

# part 2: reference -> product, one factor at a time (label, changes, rows)
REFERENCE_ARMS = (
    ("reference", {}, ROWS),
    ("subset layout: shared_core", {"layout": "shared_core"}, ("Baseline I", "RoS-KD")),
    ("split: the product's 70/10/20 (1257 train)", {"split": "product"}, ("Baseline I", "RoS-KD")),
    ("noise: per-label Bernoulli draws (product)", {"noise": "bernoulli"}, ("Baseline I", "RoS-KD")),
    ("input normalisation: mean/std (product)", {"normalize": True}, ("Baseline I", "RoS-KD")),
    ("teachers: small_cnn_wide (product)", {"teacher": "small_cnn_wide"}, ("RoS-KD",)),
    ("student: small_cnn (product)", {"student": "small_cnn"}, ("Baseline I", "RoS-KD")),
    ("weight decay 2e-4 (product default)", {"weight_decay": 2e-4}, ("Baseline I", "RoS-KD")),
    ("all of the above (= the product's choices)", "product", ROWS),
)

# part 3: product choices + random layout, one distillation factor at a time (label, changes, rows)
DISTILL_ARMS = (
    ("product choices, layout random", {}, ROWS),
    ("averaging warm-up 0", {"warmup": 0}, ("RoS-KD",)),
    ("averaging warm-up 5", {"warmup": 5}, ("RoS-KD",)),
    ("averaging warm-up 30", {"warmup": 30}, ("RoS-KD",)),
    ("no batch-norm recomputation after averaging", {"recompute_bn": False}, ("RoS-KD",)),
    ("unnormalised Exp(1) weights (paper)", {"weights": "raw"}, ("RoS-KD",)),
    ("weights normalised to sum K (mean 1)", {"weights": "mean_one"}, ("RoS-KD",)),
    ("one Exp(1) draw per sample", {"draw": "sample"}, ("RoS-KD",)),
    ("tau 8", {"tau": 8.0}, ("RoS-KD",)),
    ("alpha 1 (no CE on noisy labels)", {"alpha": 1.0}, ("RoS-KD",)),
    ("unnormalised weights + warm-up 0", {"weights": "raw", "warmup": 0}, ("RoS-KD",)),
    ("Baseline III with weight 1 per teacher (not 1/K)", {"equal_weight": 1.0}, ("Baseline III",)),
)


# ---------------------------------------------------------------- product part


def _training() -> dict:
    return {"epochs": 60, "batch_size": 64,
            "optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 2e-4},
            "schedule": {"name": "multistep", "milestones": [30, 45]}}


def product_spec(preset: str, seed: int, layout: str, warmup: int, weight_scale: str = "normalised") -> dict:
    """The converged-regime spec of one row (the product's defaults elsewhere)."""
    spec = {
        "name": "ablation", "seed": seed, "device": "cpu", "method": {"preset": preset},
        "data": {"source": "digits"}, "noise": {"kind": "symmetric", "rate": 0.4},
        "subsets": {"count": 5, "layout": layout},
        "teachers": {"archs": ["small_cnn_wide"], "training": _training()},
        "student": {"arch": "small_cnn"},
        "distillation": {"temperature": 4.0, "training": _training()},
        "export": {"onnx": False},
    }
    if preset in ("baseline_5", "roskd"):
        spec["subsets"]["overlap"] = 0.4
    if preset != "baseline_1":
        spec["distillation"]["alpha"] = 0.9
    if preset == "roskd":
        spec["distillation"]["averaging"] = {"warmup_epochs": warmup}
    if preset in ("baseline_5", "roskd"):
        spec["distillation"]["weight_scale"] = weight_scale
    return spec


def run_product(seed: int, work_dir: str) -> list[dict]:
    """Every arm of part 1 for one seed (rows sharing teachers share a run directory)."""
    import torch

    torch.set_num_threads(1)
    os.environ["COMPRESSOR_QUIET"] = "1"
    from compressor.io import read_json
    from compressor.pipeline.audit_stage import AUDIT_STAGE
    from compressor.pipeline.data_stage import DATA_STAGE
    from compressor.pipeline.distill_stage import DISTILL_STAGE
    from compressor.pipeline.metrics_stage import METRICS_STAGE
    from compressor.pipeline.runner import run_pipeline
    from compressor.pipeline.teachers_stage import TEACHERS_STAGE
    from compressor.spec import parse_spec

    stages = [DATA_STAGE, TEACHERS_STAGE, AUDIT_STAGE, DISTILL_STAGE, METRICS_STAGE]
    records, shared = [], {}
    for label, layout, warmup, weight_scale in PRODUCT_ARMS:
        accuracies, teachers = {}, None
        for row, preset in zip(ROWS, ("baseline_1", "baseline_3", "baseline_5", "roskd"), strict=True):
            if row in ("Baseline I", "Baseline III") and row in shared:
                accuracies[row] = shared[row]  # independent of the layout: run once per seed
                continue
            folder = {"Baseline I": "none", "Baseline III": "full"}.get(row, layout)
            run_dir = Path(work_dir) / f"seed{seed}" / folder
            run_pipeline(parse_spec(product_spec(preset, seed, layout, warmup, weight_scale)), run_dir,
                         stages=stages)
            metrics = read_json(run_dir / "metrics.json")
            accuracies[row] = metrics["test"][metrics["final_model"]]["accuracy"]
            if row in ("Baseline I", "Baseline III"):
                shared[row] = accuracies[row]
            if row == "RoS-KD":
                teachers = float(np.mean([t["test"]["accuracy"] for t in metrics["teachers"]]))
        records.append({"part": 1, "arm": label, "seed": seed, "teachers": teachers, **accuracies})
    return records


# ---------------------------------------------------------------- reference parts


def run_reference(part: int, labels: list[str], seed: int) -> list[dict]:
    """The arms ``labels`` of part 2 or 3 for one seed, in one process (teachers are reused where they agree)."""
    import torch

    torch.set_num_threads(1)
    import reference_roskd

    arms = {label: (changes, rows) for label, changes, rows in (REFERENCE_ARMS if part == 2 else DISTILL_ARMS)}
    records = []
    for label in labels:
        changes, rows = arms[label]
        if part == 2:
            config = product_config() if changes == "product" else replace(Config(), **changes)
        else:
            config = product_config(layout="random", **changes)
        result = reference_roskd.run(config, seed, rows)
        records.append({"part": part, "arm": label, "seed": seed, **result})
    return records


def reference_jobs(seeds: list[int]) -> list[tuple]:
    """Part 2 jobs: one per (seed, group of arms with the same teachers); part 3: one per seed."""
    jobs = []
    for seed in seeds:
        groups: dict[tuple, list[str]] = {}
        for label, changes, _ in REFERENCE_ARMS:
            config = product_config() if changes == "product" else replace(Config(), **changes)
            groups.setdefault(config.teacher_key(), []).append(label)
        jobs += [(run_reference, 2, labels, seed) for labels in groups.values()]
        jobs.append((run_reference, 3, [label for label, _, _ in DISTILL_ARMS], seed))
    return jobs


# ---------------------------------------------------------------- report


def _cell(values: list[float]) -> str:
    if not values:
        return ""
    spread = f" ± {np.std(values, ddof=1):.3f}" if len(values) > 1 else ""
    return f"{np.mean(values):.3f}{spread}"


def part_table(records: list[dict], labels: list[str], base: str) -> list[str]:
    """One markdown table: the rows' accuracies per arm and RoS-KD's paired delta against ``base``."""
    lines = ["| arm | seeds | teachers | " + " | ".join(ROWS) + " | Δ RoS-KD vs first arm (paired) |",
             "|---|---|---|" + "---|" * len(ROWS) + "---|"]
    by_seed = {r["seed"]: r for r in records if r["arm"] == base}
    for label in labels:
        mine = sorted((r for r in records if r["arm"] == label), key=lambda r: r["seed"])
        if not mine:
            continue
        cells = [_cell([r[row] for r in mine if row in r]) for row in ROWS]
        deltas = [r["RoS-KD"] - by_seed[r["seed"]]["RoS-KD"] for r in mine
                  if "RoS-KD" in r and r["seed"] in by_seed and "RoS-KD" in by_seed[r["seed"]]]
        delta = "" if label == base or not deltas else \
            f"{np.mean(deltas):+.3f}" + (f" ± {np.std(deltas, ddof=1):.3f}" if len(deltas) > 1 else "")
        teachers = _cell([r["teachers"] for r in mine if r.get("teachers") is not None])
        lines.append(f"| {label} | {len(mine)} | {teachers} | " + " | ".join(cells) + f" | {delta} |")
    return lines


def report(records: list[dict], command: str, wall: float, load: tuple[float, float], workers: int) -> str:
    """The whole markdown fragment."""
    import torch

    from compressor.bench.report import cpu_model, git_commit

    out = [
        "## RoS-KD in the converged regime: ablation",
        "",
        f"Produced by `{command}` (commit {git_commit() or 'unknown'}).",
        f"Machine: {cpu_model()}, {os.cpu_count()} CPU cores, {platform.system()}, Python "
        f"{platform.python_version()}, torch {torch.__version__}; {workers} worker processes x 1 torch thread; "
        f"1-minute load average {load[0]:.1f} at the start, {load[1]:.1f} at the end (the machine is shared). "
        f"Wall time {wall / 60:.1f} min.",
        "Test accuracy (clean labels) of each row's final model, mean ± sample std over seeds; teachers = mean test "
        "accuracy of the five subset teachers.",
    ]
    parts = ((1, "Part 1: the product (real pipeline)", [a[0] for a in PRODUCT_ARMS]),
             (2, "Part 2: the reference, one factor at a time moved to the product's value",
              [a[0] for a in REFERENCE_ARMS]),
             (3, "Part 3: product choices with the random layout, one distillation factor at a time",
              [a[0] for a in DISTILL_ARMS]))
    for part, title, labels in parts:
        mine = [r for r in records if r["part"] == part]
        if mine:
            out += ["", f"### {title}", ""] + part_table(mine, labels, labels[0])
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Command line: run the parts, write the markdown; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4], help="seeds of part 1 (product)")
    parser.add_argument("--reference-seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds of parts 2 and 3")
    parser.add_argument("--parts", type=int, nargs="+", default=[1, 2, 3], choices=[1, 2, 3])
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--work-dir", type=Path, default=ROOT / "runs" / "ablation_converged")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "ablation_converged.md")
    args = parser.parse_args(argv)

    from compressor.io import write_json, write_text

    if args.work_dir.exists():
        shutil.rmtree(args.work_dir)  # a measurement starts from nothing: no teacher is reused from a past run
    jobs = [(run_product, seed, str(args.work_dir)) for seed in args.seeds] if 1 in args.parts else []
    jobs += [job for job in reference_jobs(args.reference_seeds) if job[1] in args.parts]
    load_start = os.getloadavg()[0]
    start = time.perf_counter()
    records: list[dict] = []
    pool = ProcessPoolExecutor(args.workers, mp_context=multiprocessing.get_context("spawn"))
    with pool:
        futures = [pool.submit(job[0], *job[1:]) for job in jobs]
        for done, future in enumerate(as_completed(futures), 1):
            records += future.result()
            print(f"[{done}/{len(jobs)}] {time.perf_counter() - start:.0f} s", flush=True)
    wall = time.perf_counter() - start
    argv_text = " ".join(argv if argv is not None else sys.argv[1:])
    command = COMMAND + (f" {argv_text}" if argv_text else "")
    write_text(args.out, report(records, command, wall, (load_start, os.getloadavg()[0]), args.workers))
    write_json(args.out.with_suffix(".json"), {"command": command, "wall_seconds": round(wall, 1), "records": records})
    print(f"wrote {args.out} in {wall / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
