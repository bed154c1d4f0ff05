"""Images per second of distillation epochs: live teachers, the teacher view pool, the student alone, plain PyTorch.

Usage::

    python benchmarks/bench_distill.py [--rounds R] [--epochs E] [--threads N] [--device cpu|cuda]
                                       [--settings quickstart,synthetic28] [--modes live,pool,alone,plain]
                                       [--markdown FILE] [--json FILE]

Settings:

* ``quickstart``: ``examples/quickstart.yaml`` as it is: the digits training split (1257 images of 8x8), teachers
  ``small_cnn_wide``, ``wrn16_2``, ``small_cnn``, student ``tiny_cnn``, its distillation section (batch 64, crop
  padding 1, exponential teacher weights, alpha 0.9, temperature 4);
* ``synthetic28``: a generated 28x28 grayscale two-class set of 4,000 images (a bright square whose place depends
  on the class, on noise), five ``small_cnn`` teachers, the same student and distillation section.

Modes, each timing ``E`` epochs of a freshly initialised (seeded) student, images per second = ``E * N / s``:

* ``live``: ``distill_student`` with the teachers run on every batch (``distillation.view_pool: 0``);
* ``pool``: ``distill_student`` reading a view pool of the default 8 views (built once before the rounds; its
  one-off cost is reported beside the epochs);
* ``alone``: the student trained alone with the same loop (``alpha: 0``, Baseline I): the floor;
* ``plain``: the loop a user would write in plain PyTorch for live teachers: the same batches (order and crops from
  the same generator), teachers in eval mode under ``torch.no_grad``, ``F.cross_entropy`` plus, per teacher,
  ``F.kl_div(log_softmax(s / T), softmax(t / T), reduction="batchmean")`` weighted by the same exponential draws.

Parameter averaging is off in every mode (a per-epoch cost that the plain loop does not have). Teachers are
freshly initialised (seeded): the cost of a forward pass does not depend on the weights. The modes alternate within
each round (background load hits them alike), after one warm-up round; the median and the range over the rounds
are reported. The fused KD op is whatever ``compressor.ops`` resolves on this machine (``kd_impl`` in the output).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("COMPRESSOR_QUIET", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from compressor import ops  # noqa: E402
from compressor.bench.report import cpu_model  # noqa: E402
from compressor.data import prepare_data  # noqa: E402
from compressor.data.batches import apply_views, batch_indices, draw_views, to_float  # noqa: E402
from compressor.data.types import Split  # noqa: E402
from compressor.models import build_classifier, count_parameters  # noqa: E402
from compressor.recipes import distill_student  # noqa: E402
from compressor.spec import load_spec  # noqa: E402
from compressor.spec.training import DistillSpec  # noqa: E402
from compressor.task import Task  # noqa: E402
from compressor.training.teacher_logits import TeacherLogits  # noqa: E402
from compressor.training.view_pool_build import build_view_pool  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
MODES = ("live", "pool", "alone", "plain")
SETTINGS = ("quickstart", "synthetic28")


def synthetic28(n: int = 4000, seed: int = 0) -> Split:
    """``n`` 28x28 grayscale images of two classes: a bright 8x8 square top-left (class 0) or bottom-right (1)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    images = rng.integers(0, 90, (n, 1, 28, 28))
    for i, y in enumerate(labels):
        at = 4 + 12 * int(y) + int(rng.integers(-2, 3))
        images[i, 0, at : at + 8, at : at + 8] += 150
    return Split(torch.from_numpy(images.clip(0, 255).astype(np.uint8)), labels.astype(np.int64))


class Setting:
    """One data set with its teachers, student architecture and distillation spec."""

    def __init__(self, name: str, device: torch.device, epochs: int):
        quickstart = load_spec(ROOT / "examples" / "quickstart.yaml")
        if name == "quickstart":
            bundle = prepare_data(quickstart)
            self.data, self.classes = bundle.train, bundle.num_classes
            self.mean, self.std = bundle.mean, bundle.std
            self.archs = quickstart.teacher_archs()
        else:
            self.data, self.classes, self.mean, self.std = synthetic28(), 2, [0.3], [0.25]
            self.archs = ["small_cnn"] * 5
        self.name, self.device, self.student_arch = name, device, quickstart.student.arch
        distill = quickstart.distillation.model_dump()
        distill["training"].update(epochs=epochs, schedule={"name": "constant"})
        distill["averaging"]["enabled"] = False
        self.spec = DistillSpec.model_validate({**distill, "view_pool": 0})
        self.alone = DistillSpec.model_validate({**distill, "alpha": 0.0, "view_pool": 0})

    @property
    def image(self) -> tuple[int, int]:
        """(channels, size) of the images."""
        return int(self.data.images.shape[1]), int(self.data.images.shape[-1])

    def model(self, arch: str, seed: int) -> torch.nn.Module:
        """A freshly initialised (seeded) classifier for this data on the device."""
        torch.manual_seed(seed)
        channels, size = self.image
        return build_classifier(arch, channels, self.classes, size, self.mean, self.std).to(self.device)

    def teachers(self) -> list[torch.nn.Module]:
        """The teachers, as loaded (evaluation mode, standard memory format)."""
        return [self.model(arch, 100 + i).eval() for i, arch in enumerate(self.archs)]


def plain_loop(student, teachers, data: Split, spec: DistillSpec, device, generator: torch.Generator) -> None:
    """Distillation as a user writes it in plain PyTorch (see the module docstring)."""
    train, tau, alpha = spec.training, spec.temperature, spec.alpha
    opt = train.optimizer
    optimizer = torch.optim.SGD(student.parameters(), lr=opt.lr, momentum=opt.momentum,
                                weight_decay=opt.weight_decay, nesterov=opt.nesterov)
    labels = torch.as_tensor(data.labels, dtype=torch.long)
    student.train()
    for _ in range(train.epochs):
        for idx in batch_indices(len(data), train.batch_size, generator):
            views = draw_views(len(idx), train.augment, generator)
            x = apply_views(to_float(data.images[idx], device), train.augment.crop_padding, views)
            y = labels[idx].to(device)
            with torch.no_grad():
                outputs = [teacher(x) for teacher in teachers]
            draws = torch.empty(len(teachers)).exponential_(1.0, generator=generator)
            weights = draws / draws.sum()
            logits = student(x)
            log_p = F.log_softmax(logits / tau, dim=1)
            kd = sum(w * F.kl_div(log_p, F.softmax(t / tau, dim=1), reduction="batchmean")
                     for w, t in zip(weights.tolist(), outputs, strict=True))
            loss = (1 - alpha) * F.cross_entropy(logits, y) + alpha * tau * tau * kd
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()


def timed(setting: Setting, mode: str, pool, seed: int) -> float:
    """Seconds of ``E`` distillation epochs of a fresh student in ``mode``."""
    student = setting.model(setting.student_arch, seed)
    generator = torch.Generator().manual_seed(seed)
    teachers = setting.teachers() if mode in ("live", "plain") else []
    sync = torch.cuda.synchronize if setting.device.type == "cuda" else (lambda: None)
    sync()
    start = time.perf_counter()
    if mode == "plain":
        plain_loop(student, teachers, setting.data, setting.spec, setting.device, generator)
    else:
        spec = setting.alone if mode == "alone" else setting.spec
        distill_student(student, teachers, setting.data, spec, Task.MULTICLASS, setting.device, generator,
                        num_classes=setting.classes, view_pool=pool if mode == "pool" else None)
    sync()
    return time.perf_counter() - start


def measure(setting: Setting, modes: list[str], rounds: int, workdir: Path) -> dict:
    """Images per second of every mode over the rounds, and the pool's one-off cost."""
    pool = None
    build = None
    if "pool" in modes:
        views = DistillSpec.model_validate({"training": setting.spec.training.model_dump()}).pool_views
        start = time.perf_counter()
        pool = build_view_pool(workdir / setting.name, setting.name, TeacherLogits(setting.teachers(), setting.device),
                               setting.data.images, setting.spec.training.augment, views,
                               torch.Generator().manual_seed(0), exact=True)
        build = {"seconds": time.perf_counter() - start, "views": pool.views, "bytes": pool.nbytes}
    seconds: dict[str, list[float]] = {mode: [] for mode in modes}
    for round_ in range(rounds + 1):  # round 0 warms up (allocator, oneDNN primitives) and is not kept
        for mode in modes:
            elapsed = timed(setting, mode, pool, round_)
            if round_:
                seconds[mode].append(elapsed)
        print(f"  {setting.name} round {round_}: " + ", ".join(f"{m} {s[-1]:.2f} s" for m, s in seconds.items()
                                                               if s), file=sys.stderr, flush=True)
    images = len(setting.data) * setting.spec.training.epochs
    rates = {mode: sorted(images / s for s in values) for mode, values in seconds.items()}
    return {
        "setting": setting.name, "images": len(setting.data), "epochs": setting.spec.training.epochs,
        "image": list(setting.image), "teachers": setting.archs,
        "teacher_params": [count_parameters(t) for t in setting.teachers()],
        "student": setting.student_arch, "student_params": count_parameters(setting.model(setting.student_arch, 0)),
        "rounds": rounds, "images_per_second": rates,
        "median": {mode: statistics.median(r) for mode, r in rates.items()},
        "pool_build": build,
    }


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


def ratio(row: dict, a: str, b: str) -> str:
    """``a``'s median speed over ``b``'s, or a dash when one of them was not measured."""
    m = row["median"]
    return f"{m[a] / m[b]:.2f}x" if a in m and b in m else "-"


def markdown(rows: list[dict], info: dict, command: str) -> str:
    """The results as a markdown fragment (command, machine, table)."""
    lines = [
        f"Command: `{command}`", "",
        f"Machine: {info['cpu']}, {info['cores']} cores, torch {info['torch']} ({info['torch_threads']} threads), "
        f"Python {info['python']}, {info['os']}; fused KD op `{info['kd_impl']}`"
        + (f"; GPU {info['gpu']}" if "gpu" in info else "")
        + (f"; 1-minute load average {info['load_average_1m']} at the end" if "load_average_1m" in info else "")
        + ".", "",
        "Images per second of distillation epochs, median (range) over the rounds:", "",
        "| setting | live teachers | view pool | student alone | plain PyTorch | pool / alone | pool / live "
        "| live / plain | pool build (one-off) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        cells = []
        for mode in MODES:
            rates = r["images_per_second"].get(mode)
            cells.append(f"{statistics.median(rates):,.0f} ({rates[0]:,.0f}-{rates[-1]:,.0f})" if rates else "-")
        build = r["pool_build"]
        build_text = (f"{build['seconds']:.2f} s ({build['views']} views, {build['bytes'] / 2**20:.2f} MiB)"
                      if build else "-")
        teachers = ", ".join(sorted({f"{a}" for a in r["teachers"]}))
        lines.append(
            f"| {r['setting']}: {r['images']} images {r['image'][1]}x{r['image'][1]}, {len(r['teachers'])} teachers "
            f"({teachers}; {sum(r['teacher_params']) / 1e3:.0f}k params), student {r['student']} "
            f"({r['student_params'] / 1e3:.1f}k) | " + " | ".join(cells)
            + f" | {ratio(r, 'pool', 'alone')} | {ratio(r, 'pool', 'live')} | {ratio(r, 'live', 'plain')} "
            f"| {build_text} |")
    return "\n".join(lines) + "\n"


def emit(text: str, results: dict, markdown_path: Path | None, json_path: Path | None) -> None:
    """Print the markdown ``text``; write it and the ``results`` as JSON where the options ask."""
    print(text)
    if markdown_path:
        markdown_path.write_text(text)
    if json_path:
        json_path.write_text(json.dumps(results, indent=2) + "\n")


def main() -> None:
    """Parse the options, measure every setting, print and write the results."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=2, help="epochs per timed run")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--settings", default=",".join(SETTINGS))
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--markdown", type=Path, default=None)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    modes = [m for m in MODES if m in args.modes.split(",")]
    rows = []
    with tempfile.TemporaryDirectory() as workdir:
        for name in args.settings.split(","):
            rows.append(measure(Setting(name, device, args.epochs), modes, args.rounds, Path(workdir)))
            print(json.dumps(rows[-1]), flush=True)
    info = machine(device)
    command = "python benchmarks/bench_distill.py " + " ".join(
        f"--{k} {v}" for k, v in (("rounds", args.rounds), ("epochs", args.epochs), ("threads", args.threads),
                                  ("device", args.device), ("settings", args.settings), ("modes", args.modes))
        if v is not None)
    emit(markdown(rows, info, command), {"machine": info, "command": command, "rows": rows}, args.markdown, args.json)


if __name__ == "__main__":
    main()
