"""Distillation epoch time with and without the teacher-logit cache (``distillation.cache_teacher_logits``).

Usage::

    python benchmarks/bench_logit_cache.py [--rounds R] [--threads N] [--device cpu|cuda] [--settings a,b]
                                           [--markdown FILE] [--json FILE]

Data: the quickstart's digits training split (``examples/quickstart.yaml``: 1257 images of 8x8, 40% symmetric label
noise; the noise does not change the cost). Student: the quickstart's ``tiny_cnn``, SGD, batch 64, RoS-KD
exponential teacher weights, no augmentation (with augmentation the cache is not valid). Teacher settings:

* ``quickstart``: the quickstart's teachers ``small_cnn_wide``, ``wrn16_2``, ``small_cnn``;
* ``larger``: ``resnet18``, ``resnet34``, ``wrn40_2`` (the RoS-KD paper's kind of teachers, stems adapted to 8x8).

Teachers are freshly initialised (seeded): the cost of a forward pass does not depend on the weights' values.
Method: one distillation epoch is ``distill_student`` with ``epochs: 1`` (no averaging), timed end to end with
``time.perf_counter``, once with the teachers run on every batch (``TeacherLogits``) and once reading the cache
(``CachedTeacherLogits``); the two modes alternate within each round (so background load hits both alike), after
one warm-up round. Reported: the median and the fastest epoch over the rounds, the speed-up of each, and the
one-off cost of building the cache (a forward pass of every teacher over the training set, written as float16).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("COMPRESSOR_QUIET", "1")

import torch  # noqa: E402

from compressor import ops  # noqa: E402
from compressor.bench.report import cpu_model  # noqa: E402
from compressor.data import prepare_data  # noqa: E402
from compressor.models import build_classifier, count_parameters  # noqa: E402
from compressor.recipes import distill_student  # noqa: E402
from compressor.spec import load_spec, parse_spec  # noqa: E402
from compressor.training.logit_cache import TeacherLogitCache  # noqa: E402
from compressor.training.teacher_logits import CachedTeacherLogits  # noqa: E402

SETTINGS = {
    "quickstart": ["small_cnn_wide", "wrn16_2", "small_cnn"],
    "larger": ["resnet18", "resnet34", "wrn40_2"],
}
ROOT = Path(__file__).resolve().parent.parent


def machine(device: torch.device) -> dict:
    """What the figures were measured on."""
    info = {"cpu": cpu_model(), "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "python": platform.python_version(), "os": platform.platform(),
            "kd_impl": ops.resolve_impl(None, device)}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    try:
        info["load_average_1m"] = round(os.getloadavg()[0], 2)
    except OSError:
        pass
    return info


def epoch_seconds(student_seed: int, teachers, source, data, spec, device) -> float:
    """Wall time of one distillation epoch of a fresh student (teachers per batch when ``source`` is None)."""
    torch.manual_seed(student_seed)
    student = build_classifier("tiny_cnn", 1, 10, 8, [0.5], [0.3]).to(device)
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    distill_student(student, teachers, data, spec, "multiclass", device, torch.Generator().manual_seed(0),
                    num_classes=10, teacher_source=source)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def measure(name: str, archs: list[str], data, spec, device: torch.device, rounds: int, workdir: Path) -> dict:
    """Epoch times of one teacher setting, per batch and cached, plus the cache's build time."""
    teachers = []
    for i, arch in enumerate(archs):
        torch.manual_seed(i)
        teachers.append(build_classifier(arch, 1, 10, 8, [0.5], [0.3]).to(device).eval())
    start = time.perf_counter()
    cache = TeacherLogitCache.build(workdir / f"{name}.npy", name, teachers, data.images, device)
    build = time.perf_counter() - start
    cached = CachedTeacherLogits(cache, device)
    times: dict[str, list[float]] = {"per batch": [], "cache": []}
    for round_ in range(rounds + 1):  # round 0 warms up (allocator, oneDNN primitives) and is not kept
        for mode, source in (("per batch", None), ("cache", cached)):
            seconds = epoch_seconds(round_, teachers, source, data, spec, device)
            if round_:
                times[mode].append(seconds)
    per_batch, with_cache = times["per batch"], times["cache"]
    return {
        "setting": name, "teachers": archs, "teacher_params": [count_parameters(t) for t in teachers],
        "train_samples": len(data), "cache_bytes": int(cache.logits.nbytes), "cache_build_s": build,
        "per_batch_median_s": statistics.median(per_batch), "cache_median_s": statistics.median(with_cache),
        "per_batch_min_s": min(per_batch), "cache_min_s": min(with_cache),
        "speedup_median": statistics.median(per_batch) / statistics.median(with_cache),
        "speedup_min": min(per_batch) / min(with_cache), "rounds": rounds,
    }


def markdown(rows: list[dict], info: dict, command: str) -> str:
    """The results as a markdown fragment (command, machine, table)."""
    lines = [
        "## Teacher-logit cache: distillation epoch time (issue 7)", "",
        f"Command: `{command}`", "",
        f"Machine: {info['cpu']}, {info['cores']} cores, torch {info['torch']} ({info['torch_threads']} threads), "
        f"Python {info['python']}, {info['os']}; fused KD op `{info['kd_impl']}`"
        + (f"; GPU {info['gpu']}" if "gpu" in info else "")
        + (f"; 1-minute load average {info['load_average_1m']} at the end" if "load_average_1m" in info else "")
        + ".", "",
        "One epoch of `distill_student` over the digits training split (quickstart data; student `tiny_cnn`, batch "
        "64, exponential teacher weights, no augmentation), teachers run on every batch vs. read from the float16 "
        "cache. Median and fastest of the rounds; the build is the one-off cost of the cache.", "",
        "| teachers (params) | samples | epoch, teachers per batch (median / fastest) | epoch, cache (median / "
        "fastest) | speed-up (median / fastest) | cache build | cache size |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        teachers = ", ".join(f"{a} ({p / 1e3:.0f}k)" for a, p in zip(r["teachers"], r["teacher_params"], strict=True))
        lines.append(
            f"| {r['setting']}: {teachers} | {r['train_samples']} | {r['per_batch_median_s']:.2f} s / "
            f"{r['per_batch_min_s']:.2f} s | {r['cache_median_s']:.2f} s / {r['cache_min_s']:.2f} s | "
            f"{r['speedup_median']:.1f}x / {r['speedup_min']:.1f}x | {r['cache_build_s']:.2f} s | "
            f"{r['cache_bytes'] / 1024:.0f} KiB |")
    return "\n".join(lines) + "\n"


def main() -> None:
    """Parse the options, measure every setting, print and write the results."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--settings", default=",".join(SETTINGS), help=f"comma list of {', '.join(SETTINGS)}")
    parser.add_argument("--markdown", type=Path, default=None)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    quickstart = load_spec(ROOT / "examples" / "quickstart.yaml")
    data = prepare_data(quickstart).train
    spec = parse_spec({"distillation": {
        "weighting": "exponential", "averaging": {"enabled": False},
        "training": {"epochs": 1, "batch_size": 64, "optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.9},
                     "schedule": {"name": "constant"}}}}).distillation
    rows = []
    with tempfile.TemporaryDirectory() as workdir:
        for name in args.settings.split(","):
            rows.append(measure(name, SETTINGS[name], data, spec, device, args.rounds, Path(workdir)))
            print(json.dumps(rows[-1]), flush=True)
    info = machine(device)
    command = "python benchmarks/bench_logit_cache.py " + " ".join(
        f"--{k} {v}" for k, v in (("rounds", args.rounds), ("threads", args.threads), ("device", args.device),
                                  ("settings", args.settings)) if v is not None)
    text = markdown(rows, info, command)
    print(text)
    if args.markdown:
        args.markdown.write_text(text)
    if args.json:
        args.json.write_text(json.dumps({"machine": info, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
