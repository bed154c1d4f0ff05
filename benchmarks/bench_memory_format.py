"""Images per second of a distillation epoch with the student in the standard (NCHW) or channels-last (NHWC) format.

Usage::

    python benchmarks/bench_memory_format.py [--sizes 28,64,128,224] [--rounds 3] [--threads N] [--student tiny_cnn]
                                             [--profile] [--markdown FILE] [--json FILE]

The training loop puts convolutional models into the channels-last memory format (``MixedPrecision.prepare``,
``compressor/training/precision.py``); this measures what that is worth against the standard format at each image
size. Data: generated 3-channel images of ``S x S`` pixels, 10 classes (a bright square whose place depends on the
class, on noise), ``IMAGES_AT_224 * (224 / S)^2`` images (capped at 4,096) so that each epoch does about the same
pixel work. Models: two freshly initialised (seeded) ``tiny_cnn`` teachers run live on every batch (prepared as the
product prepares teachers, channels-last in both cases) and a ``--student`` student; the quickstart's distillation
section (batch 64, crop padding 1, exponential teacher weights), one epoch, parameter averaging off. The two formats
alternate within each round after a warm-up round; the median and the range over the rounds are reported, and the
largest difference between the two students' final weights (the same batches, so only the arithmetic differs).
``--profile`` adds, per size, the share of CPU time of the operators that take the most in one more epoch of each
format (``torch.profiler``, self time).
"""

from __future__ import annotations

import argparse
import functools
import os
import platform
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("COMPRESSOR_QUIET", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from bench_distill import emit  # noqa: E402  (this folder is the script's first import path)

from compressor.bench.report import cpu_model  # noqa: E402
from compressor.data.types import Split  # noqa: E402
from compressor.models import build_classifier  # noqa: E402
from compressor.recipes import distill_student  # noqa: E402
from compressor.spec import load_spec  # noqa: E402
from compressor.spec.training import DistillSpec  # noqa: E402
from compressor.task import Task  # noqa: E402
from compressor.training import loop  # noqa: E402
from compressor.training.precision import MixedPrecision  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
IMAGES_AT_224 = 256
CLASSES = 10
FORMATS = {"NCHW": False, "NHWC": True}


def squares(size: int, seed: int = 0) -> Split:
    """Images of ``size x size``: noise plus a bright square whose position depends on the class."""
    n = min(4096, round(IMAGES_AT_224 * (224 / size) ** 2))
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, CLASSES, n)
    images = rng.integers(0, 90, (n, 3, size, size), dtype=np.int64)
    side = max(2, size // 5)
    for i, y in enumerate(labels):
        at = int(y) * (size - side) // (CLASSES - 1)
        images[i, :, at : at + side, at : at + side] += 150
    return Split(torch.from_numpy(images.clip(0, 255).astype(np.uint8)), labels.astype(np.int64))


def epoch(data: Split, spec: DistillSpec, student_arch: str, channels_last: bool) -> tuple[float, torch.nn.Module]:
    """Seconds of one distillation epoch of a fresh student with the loop's memory format set; the student."""
    size = int(data.images.shape[-1])
    info = (3, CLASSES, size, [0.3] * 3, [0.25] * 3)
    torch.manual_seed(0)
    teachers = [build_classifier("tiny_cnn", *info).eval() for _ in range(2)]
    student = build_classifier(student_arch, *info)
    original = loop.MixedPrecision
    loop.MixedPrecision = functools.partial(MixedPrecision, channels_last=channels_last)
    try:
        start = time.perf_counter()
        distill_student(student, teachers, data, spec, Task.MULTICLASS, "cpu", torch.Generator().manual_seed(0),
                        num_classes=CLASSES)
        return time.perf_counter() - start, student
    finally:
        loop.MixedPrecision = original


def profile_epoch(data: Split, spec: DistillSpec, student_arch: str, channels_last: bool, top: int = 6) -> dict:
    """The ``top`` operators by self CPU time in one epoch, as shares of the epoch's total."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        epoch(data, spec, student_arch, channels_last)
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events)
    return {e.key: round(e.self_cpu_time_total / total, 3) for e in events[:top]}


def measure(size: int, spec: DistillSpec, student_arch: str, rounds: int, profile: bool) -> dict:
    """Images per second of both formats at ``size`` over the rounds (after a warm-up round)."""
    data = squares(size)
    seconds: dict[str, list[float]] = {name: [] for name in FORMATS}
    students = {}
    for round_ in range(rounds + 1):
        for name, channels_last in FORMATS.items():
            elapsed, students[name] = epoch(data, spec, student_arch, channels_last)
            if round_:
                seconds[name].append(elapsed)
        print(f"  {size}px round {round_}: " + ", ".join(f"{n} {s[-1]:.2f} s" for n, s in seconds.items() if s),
              file=sys.stderr, flush=True)
    rates = {name: sorted(len(data) / s for s in values) for name, values in seconds.items()}
    a, b = (students[name].state_dict() for name in FORMATS)
    weight_diff = max((a[k].double() - b[k].double()).abs().max().item() for k in a if a[k].is_floating_point())
    row = {"size": size, "images": len(data), "rounds": rounds, "images_per_second": rates,
           "speedup": statistics.median(rates["NHWC"]) / statistics.median(rates["NCHW"]),
           "max_weight_difference": weight_diff}
    if profile:
        row["profile"] = {name: profile_epoch(data, spec, student_arch, cl) for name, cl in FORMATS.items()}
    return row


def markdown(rows: list[dict], info: dict, command: str) -> str:
    """The results as a markdown fragment (command, machine, table)."""
    lines = [f"Command: `{command}`", "",
             f"Machine: {info['cpu']}, {info['cores']} cores, torch {info['torch']} ({info['threads']} threads), "
             f"Python {info['python']}; 1-minute load average {info['load_average_1m']} at the end.", "",
             f"Images per second of one distillation epoch, student {info['student']}, two live tiny_cnn teachers; "
             "median (range) over the rounds:", "",
             "| image size | images | NCHW (standard) | NHWC (channels-last) | NHWC / NCHW "
             "| largest weight difference |",
             "|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        cells = [f"{statistics.median(v):,.1f} ({v[0]:,.1f}-{v[-1]:,.1f})" for v in r["images_per_second"].values()]
        lines.append(f"| {r['size']}x{r['size']} | {r['images']} | " + " | ".join(cells)
                     + f" | {r['speedup']:.2f}x | {r['max_weight_difference']:.1e} |")
    for r in rows:
        for name, shares in r.get("profile", {}).items():
            ops = ", ".join(f"`{op}` {share:.0%}" for op, share in shares.items())
            lines += ["", f"{r['size']}x{r['size']} {name}, share of CPU time (self): {ops}"]
    return "\n".join(lines) + "\n"


def main() -> None:
    """Parse the options, measure every size, print and write the results."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="28,64,128,224")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--student", default="tiny_cnn")
    parser.add_argument("--profile", action="store_true", help="break one epoch of each format down by operator")
    parser.add_argument("--markdown", type=Path, default=None)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    distill = load_spec(ROOT / "examples" / "quickstart.yaml").distillation.model_dump()
    distill["training"].update(epochs=1, schedule={"name": "constant"})
    distill["averaging"]["enabled"] = False
    spec = DistillSpec.model_validate({**distill, "view_pool": 0})
    rows = [measure(int(size), spec, args.student, args.rounds, args.profile) for size in args.sizes.split(",")]
    info = {"cpu": cpu_model(), "cores": os.cpu_count(), "threads": torch.get_num_threads(), "torch": torch.__version__,
            "python": platform.python_version(), "student": args.student,
            "load_average_1m": round(os.getloadavg()[0], 2)}
    command = "python benchmarks/bench_memory_format.py " + " ".join(
        f"--{k} {v}" for k, v in (("sizes", args.sizes), ("rounds", args.rounds), ("threads", args.threads),
                                  ("student", args.student)) if v is not None)
    command += " --profile" if args.profile else ""
    emit(markdown(rows, info, command), {"machine": info, "command": command, "rows": rows}, args.markdown, args.json)


if __name__ == "__main__":
    main()
