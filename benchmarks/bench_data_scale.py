"""The data stage at scale: peak anonymous memory of the process tree and images per second, on a >2 GB ``.npz``.

Usage::

    python benchmarks/bench_data_scale.py [--gib 2.1] [--dir /tmp] [--workers 2] [--batch-size 256]
                                          [--distill-batch-size 32] [--distill-rows 0] [--device cpu|cuda] [--keep]
                                          [--json FILE] [--markdown FILE]

Data: an uncompressed MedMNIST-layout ``.npz`` of 224x224x3 ``uint8`` images (80 / 10 / 10 % train / val / test,
10 classes, random pixels with a class-dependent bright square) written chunk by chunk with
``compressor.data.npz.write_npz_chunks`` (never held in memory), ``--gib`` GiB of pixels in all.

Phases, each in a fresh child process (``python bench_data_scale.py --phase NAME``) so that it is measured alone:

* ``data``: the pipeline's data stage (``run_pipeline(..., stages=[DATA_STAGE])``): open the members memory-mapped
  after a streaming CRC check, read the training split once for the window and the channel statistics (histograms),
  write ``data/labels.npz`` and ``data/summary.json``, hash the file for the stage key.
* ``loader``: one shuffled pass over the training split as training reads it: index batches from a seeded generator
  through ``compressor.data.pixel_batches`` (a ``DataLoader`` with ``--workers`` worker processes, pinned memory on
  CUDA), each batch made the model's float input on ``--device`` by ``compressor.data.to_model_input``. Reported:
  images per second of the pass (wall time, first batch included).
* ``distill``: one distillation epoch with small models on the streamed training split, through the training loop
  (``compressor.recipes.distill_student``: ``ShuffledBatches`` reading the store through the same ``DataLoader``,
  RoS-KD with exponential weighting, parameter averaging): two ``tiny_cnn`` teachers (freshly initialised; their
  logits are computed per batch as in a real run, their accuracy is irrelevant here) and a ``tiny_cnn`` student,
  batch ``--distill-batch-size``, crop and flip augmentation. Reported: images per second of the epoch (wall time of
  ``distill_student``, the averager's final batch-norm pass over the training split included). ``--distill-rows N``
  distils on the first N training images only (a view of the same memory-mapped store), for a machine too slow
  for a full epoch; the default is the whole training split.

Memory: while a phase runs, the parent samples every 0.1 s the process tree of the child (the child and, through
``/proc/*/stat``, all its descendants: the DataLoader workers) and records the peak of the sum of ``Pss_Anon``
(``/proc/PID/smaps_rollup``: anonymous memory, pages shared after ``fork`` split among the sharers, so the sum is the
tree's true anonymous footprint) and, as an upper bound, of ``RssAnon`` (``/proc/PID/status``: shared pages counted
in every process). Page cache (the memory-mapped file) is not anonymous memory and is not counted. Target (issue 12):
at most 1.5 GB of anonymous memory for the 2+ GB data set.

"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
SIZE = 224
CHUNK = 256  # images per chunk written
SAMPLE_SECONDS = 0.1


def write_data(path: Path, gib: float, seed: int = 0) -> dict:
    """Write the benchmark's npz chunk by chunk; returns its counts and size."""
    from compressor.data.npz import write_npz_chunks

    per_image = SIZE * SIZE * 3
    total = math.ceil(gib * 2**30 / per_image)
    counts = {"train": int(total * 0.8), "val": int(total * 0.1)}
    counts["test"] = total - counts["train"] - counts["val"]
    rng = np.random.default_rng(seed)
    labels = {split: rng.integers(0, 10, n) for split, n in counts.items()}

    def chunks(split: str):
        for start in range(0, counts[split], CHUNK):
            part = labels[split][start : start + CHUNK]
            images = rng.integers(0, 128, size=(len(part), SIZE, SIZE, 3), dtype=np.uint8)
            for i, label in enumerate(part):  # a class-dependent bright square
                row, col = divmod(int(label), 4)
                images[i, row * 56 : row * 56 + 56, col * 56 : col * 56 + 56] += 120
            yield images

    members = {}
    for split, n in counts.items():
        members[f"{split}_images"] = ((n, SIZE, SIZE, 3), "uint8", chunks(split))
        members[f"{split}_labels"] = ((n, 1), "int64", iter([labels[split][:, None]]))
    write_npz_chunks(path, members)
    return {"images": counts, "pixel_bytes": total * per_image, "file_bytes": path.stat().st_size}


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as handle:
                    parent = int(handle.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            tree.setdefault(parent, []).append(int(entry))
    return tree


def _field_kb(path: str, name: str) -> int:
    try:
        with open(path) as handle:
            for line in handle:
                if line.startswith(name):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def tree_anon_kb(root: int) -> tuple[int, int, int]:
    """``(sum of Pss_Anon, sum of RssAnon, processes)`` over ``root`` and its descendants, in kB."""
    tree, stack, pids = _children(), [root], []
    while stack:
        pid = stack.pop()
        pids.append(pid)
        stack.extend(tree.get(pid, []))
    pss = sum(_field_kb(f"/proc/{p}/smaps_rollup", "Pss_Anon:") for p in pids)
    rss = sum(_field_kb(f"/proc/{p}/status", "RssAnon:") for p in pids)
    return pss, rss, len(pids)


def measure(phase: str, args: argparse.Namespace, workdir: Path) -> dict:
    """Run one phase in a child process, sampling its process tree's anonymous memory until it exits."""
    command = [sys.executable, __file__, "--phase", phase, "--workdir", str(workdir), "--workers",
               str(args.workers), "--batch-size", str(args.batch_size), "--device", args.device,
               "--distill-batch-size", str(args.distill_batch_size), "--distill-rows", str(args.distill_rows)]
    peak = {"pss_anon_kb": 0, "rss_anon_kb": 0, "processes": 0}
    child = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, cwd=ROOT)
    done = threading.Event()

    def sample():
        while not done.is_set():
            pss, rss, count = tree_anon_kb(child.pid)
            peak["pss_anon_kb"], peak["rss_anon_kb"] = max(peak["pss_anon_kb"], pss), max(peak["rss_anon_kb"], rss)
            peak["processes"] = max(peak["processes"], count)
            time.sleep(SAMPLE_SECONDS)

    sampler = threading.Thread(target=sample, daemon=True)
    start = time.perf_counter()
    sampler.start()
    output, _ = child.communicate()
    done.set()
    sampler.join()
    if child.returncode != 0:
        raise SystemExit(f"phase {phase} failed with exit code {child.returncode}")
    return {"phase": phase, "wall_seconds": round(time.perf_counter() - start, 2),
            "peak_pss_anon_mib": round(peak["pss_anon_kb"] / 1024, 1),
            "peak_rss_anon_mib": round(peak["rss_anon_kb"] / 1024, 1), "processes": peak["processes"],
            **json.loads(output.strip().splitlines()[-1])}


def _spec(workdir: Path, workers: int, **sections):
    from compressor.spec import parse_spec

    return parse_spec({"seed": 0, "device": "cpu", "data": {"source": "npz", "path": str(workdir / "data.npz"),
                                                            "workers": workers}, **sections})


def phase_data(workdir: Path, args: argparse.Namespace) -> dict:
    from compressor.pipeline.data_stage import DATA_STAGE
    from compressor.pipeline.runner import run_pipeline

    start = time.perf_counter()
    run_pipeline(_spec(workdir, args.workers), workdir / "run", stages=[DATA_STAGE])
    return {"seconds": round(time.perf_counter() - start, 2)}


def phase_loader(workdir: Path, args: argparse.Namespace) -> dict:
    import torch

    from compressor.data import pixel_batches, prepare_data, to_model_input
    from compressor.data.batches import batch_indices
    from compressor.io import read_json

    device = torch.device(args.device)
    bundle = prepare_data(_spec(workdir, args.workers), read_json(workdir / "run" / "data" / "summary.json"))
    train = bundle.train
    order = batch_indices(len(train), args.batch_size, torch.Generator().manual_seed(0))
    start, seen, checksum = time.perf_counter(), 0, 0.0
    for _, pixels in pixel_batches(train.images, order, workers=args.workers, pin_memory=device.type == "cuda"):
        x = to_model_input(pixels, train.window, device)
        checksum += float(x[:, :, 0, 0].sum())  # uses the batch (and synchronises a GPU)
        seen += len(pixels)
    seconds = time.perf_counter() - start
    return {"images": seen, "seconds": round(seconds, 2), "images_per_second": round(seen / seconds, 1),
            "streamed": type(train.images).__name__, "checksum": round(checksum, 3)}


def phase_distill(workdir: Path, args: argparse.Namespace) -> dict:
    import torch

    from compressor.data import prepare_data
    from compressor.io import read_json
    from compressor.models import build_classifier
    from compressor.recipes import distill_student

    torch.set_num_threads(1)
    training = {"epochs": 1, "batch_size": args.distill_batch_size, "optimizer": {"name": "sgd", "lr": 0.05},
                "schedule": {"name": "constant"}, "augment": {"hflip": True, "crop_padding": 4}}
    spec = _spec(workdir, args.workers, distillation={"training": training, "weighting": "exponential",
                                                      "averaging": {"enabled": True, "warmup_epochs": 0}})
    bundle = prepare_data(spec, read_json(workdir / "run" / "data" / "summary.json"))
    train, device = bundle.train, torch.device(args.device)
    if 0 < args.distill_rows < len(train):
        train = train.subset(np.arange(args.distill_rows))
    info = (bundle.channels, bundle.num_classes, bundle.image_size, bundle.mean, bundle.std)
    torch.manual_seed(0)
    teachers = [build_classifier("tiny_cnn", *info).to(device).eval() for _ in range(2)]
    student = build_classifier("tiny_cnn", *info).to(device)
    start = time.perf_counter()
    history, _ = distill_student(student, teachers, train, spec.distillation, bundle.task, device,
                                 torch.Generator().manual_seed(0))
    seconds = time.perf_counter() - start
    return {"images": len(train), "seconds": round(seconds, 2), "images_per_second": round(len(train) / seconds, 1),
            "streamed": type(train.images).__name__, "loss": round(float(history.loss[-1]), 4)}


PHASES = {"data": phase_data, "loader": phase_loader, "distill": phase_distill}


def machine() -> dict:
    import torch

    from compressor.bench.report import cpu_model

    info = {"cpu": cpu_model(), "cores": os.cpu_count(), "memory_gib": round(
        os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1), "python": platform.python_version(),
            "torch": torch.__version__, "load_average_1m": round(os.getloadavg()[0], 2)}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def markdown(result: dict) -> str:
    lines = [f"Data: {result['data']['pixel_bytes'] / 2**30:.2f} GiB of 224x224x3 uint8 pixels "
             f"({sum(result['data']['images'].values())} images), workers {result['workers']}, batch "
             f"{result['batch_size']} (loader) / {result['distill_batch_size']} (distill), device {result['device']}; "
             f"machine: {result['machine']['cpu']}, "
             f"{result['machine']['cores']} cores, 1-minute load average {result['machine']['load_average_1m']} at "
             "the end.", "",
             "| phase | wall s | peak Pss_Anon MiB (tree) | peak RssAnon MiB (tree, upper bound) | processes "
             "| images | images/s |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for row in result["phases"]:
        lines.append(f"| {row['phase']} | {row['wall_seconds']} | {row['peak_pss_anon_mib']} | "
                     f"{row['peak_rss_anon_mib']} | {row['processes']} | {row.get('images', '')} | "
                     f"{row.get('images_per_second', '')} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--gib", type=float, default=2.1, help="GiB of pixels to write (default 2.1)")
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()), help="where to write the data")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=256, help="batch of the loader phase")
    parser.add_argument("--distill-batch-size", type=int, default=32, help="batch of the distill phase")
    parser.add_argument("--distill-rows", type=int, default=0, help="training images distilled on (0: all)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--keep", action="store_true", help="keep the data and run directory")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--markdown", type=Path)
    parser.add_argument("--phase", choices=sorted(PHASES), help=argparse.SUPPRESS)
    parser.add_argument("--workdir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:
        os.environ.setdefault("COMPRESSOR_QUIET", "1")
        print(json.dumps(PHASES[args.phase](args.workdir, args)))
        return
    workdir = Path(tempfile.mkdtemp(prefix="bench_data_scale_", dir=args.dir))
    try:
        start = time.perf_counter()
        data = write_data(workdir / "data.npz", args.gib)
        data["write_seconds"] = round(time.perf_counter() - start, 1)
        phases = [measure(name, args, workdir) for name in PHASES]
        result = {"data": data, "workers": args.workers, "batch_size": args.batch_size,
                  "distill_batch_size": args.distill_batch_size, "distill_rows": args.distill_rows,
                  "device": args.device,
                  "machine": machine(), "phases": phases}
    finally:
        if not args.keep:
            for path in sorted(workdir.rglob("*"), key=lambda p: len(p.parts), reverse=True):
                path.unlink() if path.is_file() else path.rmdir()
            workdir.rmdir()
    text = markdown(result)
    print(text)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    if args.markdown:
        args.markdown.write_text(text)


if __name__ == "__main__":
    main()
