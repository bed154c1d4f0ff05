"""What the two benchmark tables share: provider choice, the timing figures of a row, the machine description and
table output (rich when installed, plain text otherwise; markdown; JSON)."""

from __future__ import annotations

import datetime as _dt
import itertools
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from compressor import ops
from compressor.io import write_text
from compressor.report.document import markdown_table


@dataclass(frozen=True)
class Column:
    """One table column: header, row key, how a value is shown (``None`` as an em dash) and, for the console, the
    width beyond which it is cut (markdown and JSON keep the whole text)."""

    header: str
    key: str
    fmt: Callable[[object], str] = str
    console_width: int | None = None

    def cell(self, row: dict, *, console: bool = False) -> str:
        value = row.get(self.key)
        text = "—" if value is None else self.fmt(value)
        if console and self.console_width and len(text) > self.console_width:
            text = text[: self.console_width - 1] + "…"
        return text


def fixed(digits: int) -> Callable[[object], str]:
    """Formatter with ``digits`` decimals."""
    return lambda v: f"{v:.{digits}f}"


def rate(v: object) -> str:
    """Bandwidth formatter with about three significant digits (1234, 56.7, 0.123)."""
    return f"{v:.0f}" if v >= 100 else f"{v:.1f}" if v >= 1 else f"{v:.3f}"


def times(v: object) -> str:
    """Speed-up formatter: ``3.41x``."""
    return f"{v:.2f}x"


BANDWIDTH_COLUMNS = (
    Column("GB/s", "gbps", rate),
    Column("copy GB/s", "copy_gbps", rate),
    Column("x copy", "copy_ratio", fixed(2)),
)
NOTE_COLUMN = Column("note", "error", console_width=40)
# what the markdown's "Machine:" line shows of ``machine_info`` (and the clock), in this order, where known
MACHINE_KEYS = ("gpu", "cuda", "cpu", "cpu_cores_available", "torch_threads", "clock", "load_average_1m", "torch",
                "triton", "python")


def timed_impls(device: torch.device | str) -> list[str]:
    """The ops' implementations available on ``device``, less Triton on the CPU: there it only exists through the
    interpreter (``TRITON_INTERPRET=1``), whose timings mean nothing."""
    device = torch.device(device)
    return [n for n in ops.available_impls(device) if not (device.type == "cpu" and n == "triton")]


def select_providers(requested: Sequence[str] | None, available: Sequence[str], known: Sequence[str]) -> list[str]:
    """The providers to run, in ``known`` order: those ``requested``, or every available one when none is.

    Raises:
        ValueError: a requested provider is not in ``known``.
    """
    chosen = list(requested) if requested else list(available)
    unknown = [p for p in chosen if p not in known]
    if unknown:
        raise ValueError(f"unknown provider(s) {unknown}; choose from {', '.join(known)}")
    return [p for p in known if p in chosen]


def add_timing(row: dict, samples: Sequence[float], moved_bytes: int) -> None:
    """Fill ``row`` from the timer's ``samples`` (seconds): median and min in ms, the sample count, GB/s of
    ``moved_bytes`` over the median time and its ratio to ``row["copy_gbps"]``."""
    median = statistics.median(samples)
    gbps = moved_bytes / median / 1e9
    row.update(median_ms=median * 1e3, min_ms=min(samples) * 1e3, reps=len(samples), gbps=gbps,
               copy_ratio=gbps / row["copy_gbps"])


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message ("" when it has none)."""
    return (str(exc).strip().splitlines() or [""])[0]


def error_text(exc: BaseException) -> str:
    """A failed provider's note: the exception's type and the first line of its message, 160 characters at most."""
    return f"{type(exc).__name__}: {first_line(exc)}"[:160]


def cpu_model() -> str:
    """The CPU's model name (Linux ``/proc/cpuinfo``), else the platform's processor string."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _git(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], capture_output=True, text=True, timeout=5,
                          cwd=Path(__file__).resolve().parent)


def git_commit() -> str | None:
    """Short hash of the checkout's HEAD, with ``+dirty`` when tracked files differ from it; None outside git."""
    try:
        out = _git("rev-parse", "--short", "HEAD")
        dirty = _git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    return out.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def machine_info(device: torch.device) -> dict:
    """What the numbers were measured on: device, CPU, thread count, library versions, command, date, commit."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count()
    argv0 = Path(sys.argv[0])
    if argv0.name == "__main__.py":  # python -m compressor ... or python -m compressor.bench ...
        program = "python -m compressor.bench" if argv0.parent.name == "bench" else "python -m compressor"
    else:
        program = argv0.name
    info = {
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "command": " ".join([program, *(shlex.quote(a) for a in sys.argv[1:])]),
        "device": str(device),
        "cpu": cpu_model(),
        "cpu_cores_available": cores,
        "torch_threads": torch.get_num_threads(),
        "load_average_1m": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "git_commit": git_commit(),
    }
    try:
        import triton

        info["triton"] = triton.__version__
    except ImportError:
        info["triton"] = None
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info["gpu"] = props.name
        info["gpu_memory_gib"] = round(props.total_memory / 2**30, 1)
        info["cuda"] = torch.version.cuda
    return info


def plain_table(title: str, columns: Sequence[Column], rows: Sequence[dict]) -> str:
    """Fixed-width text table (used when rich is not installed)."""
    cells = [[c.header for c in columns]] + [[c.cell(r, console=True) for c in columns] for r in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
    lines = [title]
    for j, line in enumerate(cells):
        lines.append("  ".join(v.rjust(w) for v, w in zip(line, widths, strict=True)))
        if j == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def print_table(title: str, columns: Sequence[Column], rows: Sequence[dict], *, group_key: Callable[[dict], object]):
    """Print the table with rich when available (a rule between groups of rows), else as plain text."""
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        print(plain_table(title, columns, rows), flush=True)
        return
    table = Table(title=title, header_style="bold")
    for c in columns:
        table.add_column(c.header, justify="left" if c.key in ("provider", "case", "error") else "right")
    for i, (_, group) in enumerate(itertools.groupby(rows, key=group_key)):
        if i:
            table.add_section()
        for r in group:
            table.add_row(*[c.cell(r, console=True) for c in columns])
    # A terminal keeps its own width; a log file or pipe gets a width that fits every column.
    console = Console() if sys.stdout.isatty() else Console(width=220)
    console.print(table)


def markdown_report(title: str, meta: dict, columns: Sequence[Column], rows: Sequence[dict], notes: str = "") -> str:
    """A markdown section: title, the command and machine, the table and notes."""
    machine = ", ".join(f"{k}: {meta[k]}" for k in MACHINE_KEYS if meta.get(k) is not None)
    parts = [
        f"### {title}",
        "",
        f"Command: `{meta.get('command', '?')}`  ",
        f"Machine: {machine}  ",
        f"Date: {meta.get('date', '?')}, commit {meta.get('git_commit') or '?'}",
        "",
        markdown_table([c.header for c in columns], [[c.cell(r) for c in columns] for r in rows]),
    ]
    if notes:
        parts += ["", notes]
    return "\n".join(parts) + "\n"


def write_outputs(json_path: str | os.PathLike | None, md_path: str | os.PathLike | None, title: str, meta: dict,
                  columns: Sequence[Column], rows: Sequence[dict], notes: str) -> None:
    """Write the table as JSON (``{"meta": ..., "rows": [...]}``) to ``json_path`` and as a markdown section
    (``markdown_report``) to ``md_path``, each only when given."""
    if json_path:
        write_text(json_path, json.dumps({"meta": meta, "rows": list(rows)}, indent=2, default=str) + "\n")
    if md_path:
        write_text(md_path, markdown_report(title, meta, columns, rows, notes))


def add_speedups(rows: Sequence[dict], baselines: dict[str, str]) -> None:
    """Sets ``row[key] = baseline median / row median`` for each ``provider -> key`` in ``baselines`` (in place).

    Rows without a median (failed or skipped providers) and baselines absent from ``rows`` are left alone.
    """
    medians = {r["provider"]: r["median_ms"] for r in rows if r["median_ms"] is not None}
    for r in rows:
        if r["median_ms"] is None:
            continue
        for provider, key in baselines.items():
            if provider in medians:
                r[key] = medians[provider] / r["median_ms"]
