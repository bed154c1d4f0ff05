"""onnxruntime latency (batch 1) and throughput (batch 64) of a run's largest teacher, fp32 student and int8 student.

Usage::

    python benchmarks/bench_onnx.py RUN_DIR [--threads N] [--seconds S] [--rounds R] [--markdown FILE] [--json FILE]

The largest teacher (most parameters) is exported once to ``RUN_DIR/bench/teacher_<i>.onnx`` with the same
exporter as the student (reused while newer than its checkpoint). The student files are the run's
``student.onnx`` and ``student.int8.onnx`` (or ``student.int8.rejected.onnx``, labelled as refused by the gate).

Method: one onnxruntime CPU session per model (all graph optimisations, ``--threads`` intra-op threads, default
onnxruntime's choice). Inputs are random ``float32`` images of the model's shape. Each round times every model in
turn (models interleaved, so background load hits them alike): after warm-up, repeated ``session.run`` calls for
``--seconds`` (at least 20), timed with ``time.perf_counter``. A model's typical figure is the median over rounds of the
per-round median: latency = milliseconds per batch-1 call (p90 beside), throughput = 64 / seconds per batch-64
call, in images/s. The best figure uses the fastest call over all rounds instead: on a machine shared with other
work, long calls (a big model at batch 64) are interrupted more often than short ones, which inflates their
median, while the fastest call approaches the uncontended cost. The speed-up is reported for both.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

THROUGHPUT_BATCH = 64


def largest_teacher(run_dir: Path) -> tuple[int, dict]:
    """Index and summary of the teacher with the most parameters."""
    records = [json.loads(p.read_text()) for p in sorted((run_dir / "teachers").glob("teacher_*.json"))]
    if not records:
        sys.exit(f"{run_dir}: no teachers/teacher_*.json (not a finished run directory)")
    best = max(range(len(records)), key=lambda i: records[i]["params"])
    return int(records[best]["name"].split("_")[-1]), records[best]


def teacher_onnx(run_dir: Path, index: int) -> Path:
    """The teacher exported to ONNX (fp32, same exporter and metadata as the student), cached in ``bench/``."""
    checkpoint = run_dir / "teachers" / f"teacher_{index}.safetensors"
    out = run_dir / "bench" / f"teacher_{index}.onnx"
    if out.exists() and out.stat().st_mtime >= checkpoint.stat().st_mtime:
        return out
    from compressor.export.checked_export import export_checked

    from compressor.checkpoint import load_classifier

    model, info = load_classifier(checkpoint, "cpu")
    report = export_checked(model, info, out)
    if not report["parity"]["passed"]:
        sys.exit(f"teacher {index}: ONNX parity check failed: {report['parity']}")
    return out


def session(path: Path, threads: int) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        options.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def time_runs(sess: ort.InferenceSession, feed: dict, seconds: float, warmup: int = 5,
              min_reps: int = 20) -> list[float]:
    """Seconds per ``sess.run`` call, repeated for ``seconds`` after ``warmup`` calls."""
    for _ in range(warmup):
        sess.run(None, feed)
    samples: list[float] = []
    stop = time.perf_counter() + seconds
    while len(samples) < min_reps or time.perf_counter() < stop:
        start = time.perf_counter()
        sess.run(None, feed)
        samples.append(time.perf_counter() - start)
    return samples


def percentile(samples: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(samples), q))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--threads", type=int, default=0, help="intra-op threads (0: onnxruntime default)")
    parser.add_argument("--seconds", type=float, default=2.0, help="timed seconds per model, batch size and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--markdown", type=Path)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    run_dir = args.run_dir

    index, teacher = largest_teacher(run_dir)
    student = json.loads((run_dir / "student" / "summary.json").read_text())
    models = [(f"largest teacher (teacher_{index}, {teacher['arch']})", teacher_onnx(run_dir, index),
               teacher["params"]),
              (f"student fp32 ({student['arch']})", run_dir / "student.onnx", student["params"])]
    for name, label in (("student.int8.onnx", "student int8"),
                        ("student.int8.rejected.onnx", "student int8 (refused by the gate)")):
        if (run_dir / name).exists():
            models.append((f"{label} ({student['arch']})", run_dir / name, student["params"]))
    missing = [str(path) for _, path, _ in models if not path.exists()]
    if missing:
        sys.exit(f"missing model files: {', '.join(missing)}")

    sessions = [session(path, args.threads) for _, path, _ in models]
    rng = np.random.default_rng(0)
    feeds = []
    for sess in sessions:
        shape = sess.get_inputs()[0].shape
        c, h, w = (int(d) for d in shape[1:])
        name = sess.get_inputs()[0].name
        feeds.append({b: {name: rng.random((b, c, h, w), dtype=np.float32)} for b in (1, THROUGHPUT_BATCH)})
    per_round: list[list[dict]] = [[] for _ in models]
    for r in range(args.rounds):
        for i, sess in enumerate(sessions):
            one = time_runs(sess, feeds[i][1], args.seconds)
            many = time_runs(sess, feeds[i][THROUGHPUT_BATCH], args.seconds)
            per_round[i].append({"b1_median": statistics.median(one), "b1_p90": percentile(one, 90),
                                 "b1_min": min(one), "b64_median": statistics.median(many), "b64_min": min(many)})
        print(f"round {r + 1}/{args.rounds} done", file=sys.stderr)

    rows = []
    for (label, path, params), rounds in zip(models, per_round, strict=True):
        b1 = statistics.median(x["b1_median"] for x in rounds)
        b1_p90 = statistics.median(x["b1_p90"] for x in rounds)
        b64 = statistics.median(x["b64_median"] for x in rounds)
        b64_best = min(x["b64_min"] for x in rounds)
        rows.append({"model": label, "file": path.name, "size_bytes": path.stat().st_size, "params": params,
                     "latency_b1_ms": 1e3 * b1, "latency_b1_p90_ms": 1e3 * b1_p90,
                     "latency_b1_best_ms": 1e3 * min(x["b1_min"] for x in rounds),
                     "throughput_b64_img_s": THROUGHPUT_BATCH / b64, "batch64_ms": 1e3 * b64,
                     "throughput_b64_best_img_s": THROUGHPUT_BATCH / b64_best})
    speedup = rows[1]["throughput_b64_img_s"] / rows[0]["throughput_b64_img_s"]
    speedup_best = rows[1]["throughput_b64_best_img_s"] / rows[0]["throughput_b64_best_img_s"]
    machine = {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
               "cpus": os.cpu_count(), "onnxruntime": ort.__version__, "threads": args.threads or "default",
               "load_average_1m": os.getloadavg()[0]}
    result = {"run_dir": str(run_dir), "machine": machine, "rows": rows,
              "student_fp32_vs_teacher_batch64_speedup": speedup,
              "student_fp32_vs_teacher_batch64_speedup_best": speedup_best}

    lines = [
        "| model | file | parameters | size (bytes) | b=1 latency median (ms) | b=1 p90 (ms) | b=1 best (ms) "
        "| b=64 throughput median (img/s) | b=64 best (img/s) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(f"| {row['model']} | {row['file']} | {row['params']:,} | {row['size_bytes']:,} | "
                     f"{row['latency_b1_ms']:.3f} | {row['latency_b1_p90_ms']:.3f} | {row['latency_b1_best_ms']:.3f} | "
                     f"{row['throughput_b64_img_s']:,.0f} | {row['throughput_b64_best_img_s']:,.0f} |")
    lines.append("")
    met = "met" if min(speedup, speedup_best) >= 3 else "NOT met"
    lines.append(f"fp32 student vs largest teacher, throughput at batch 64: **{speedup:.1f}x** (median), "
                 f"**{speedup_best:.1f}x** (best) (target >= 3x: {met}).")
    lines.append(f"Machine: {machine['platform']}, {machine['cpus']} CPUs, onnxruntime {machine['onnxruntime']}, "
                 f"intra-op threads {machine['threads']}, 1-min load average at the end "
                 f"{machine['load_average_1m']:.1f}.")
    text = "\n".join(lines)
    print(text)
    if args.markdown:
        args.markdown.write_text(text + "\n")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
