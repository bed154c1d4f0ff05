"""``compressor bench``: the click group of the micro-benchmarks (also ``python -m compressor.bench``).

The main CLI adds it with ``main.add_command(bench)``. Only torch, click and (optionally) rich are imported, so the
benchmarks run on a machine without the spec stack; torch is imported when a benchmark runs, not when the command
line starts (``compressor --help`` stays fast).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

if TYPE_CHECKING:
    import torch

DEVICES = ("auto", "cpu", "cuda")


def _device(name: str) -> torch.device:
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise click.BadParameter("no CUDA device is available here", param_hint="--device")
    return torch.device(name)


def _split_names(values: tuple[str, ...]) -> list[str] | None:
    """``--impl a,b --impl c`` -> ``[a, b, c]``; None when not given (all available)."""
    names = [n.strip() for v in values for n in v.split(",") if n.strip()]
    return names or None


def _timing(quick: bool, seconds: float | None, l2_flush: bool = True, clock: str = "wall") -> dict:
    """Keyword arguments of ``compressor.bench.timers.measure``."""
    return {"seconds": seconds if seconds is not None else (0.3 if quick else 1.0), "flush_l2": l2_flush,
            "clock": clock}


@click.group("bench")
def bench() -> None:
    """Micro-benchmarks of the fused ops (tables for benchmarks/RESULTS.md)."""


@bench.command("kernels")
@click.option("--device", type=click.Choice(DEVICES), default="auto", show_default=True)
@click.option(
    "--grid",
    type=click.Choice(("auto", "small", "classification", "large-vocab", "all")),
    default="auto",
    show_default=True,
    help="small: K in {1,3,5}, C in {2,8,32,100}, B in {64,256}; classification: B=256, C in {8,100,1000}, K in "
    "{1,3,5,8}; large-vocab: C in {32768,131072}. auto: classification on CPU, classification and large-vocab on "
    "CUDA; all: the three.",
)
@click.option("--quick", is_flag=True, help="Fewer shapes and shorter measurements.")
@click.option(
    "--dtype",
    type=click.Choice(("auto", "float32", "bfloat16", "float16")),
    default="auto",
    show_default=True,
    help="auto: float32 for the small and classification grids; bfloat16 for large vocabulary on CUDA, float32 on CPU.",
)
@click.option(
    "--impl",
    "impls",
    multiple=True,
    help="Providers to run, comma-separated or repeated: eager, compile, reference, cpp, cuda, triton "
    "(default: all available).",
)
@click.option("--batch", type=int, default=None, help="B of the large-vocabulary grid (default 8192 CUDA, 64 CPU).")
@click.option("--seconds", type=float, default=None, help="Target measuring time per provider and shape.")
@click.option("--max-seconds", type=float, default=None, help="Start no new shape after this many seconds.")
@click.option("--threads", type=int, default=None, help="torch.set_num_threads before measuring (CPU).")
@click.option("--no-memory", is_flag=True, help="Skip the peak-memory measurement.")
@click.option("--no-check", is_flag=True, help="Skip the gradient check against the eager composite.")
@click.option("--no-l2-flush", is_flag=True, help="CUDA: do not evict the L2 cache before each timed call.")
@click.option(
    "--clock",
    type=click.Choice(("wall", "cpu")),
    default="wall",
    show_default=True,
    help="cpu: the process's CPU time instead of wall time (CPU, with --threads 1): on a shared machine it leaves out "
    "the time spent waiting for a core.",
)
@click.option("--json", "json_path", type=click.Path(dir_okay=False), default=None, help="Write rows + machine, JSON.")
@click.option("--markdown", "md_path", type=click.Path(dir_okay=False), default=None, help="Write a markdown section.")
def kernels_command(
    device,
    grid,
    quick,
    dtype,
    impls,
    batch,
    seconds,
    max_seconds,
    threads,
    no_memory,
    no_check,
    no_l2_flush,
    clock,
    json_path,
    md_path,
) -> None:
    """multi_teacher_kd forward+backward: providers x shapes, with bandwidth, copy ratio, speed-ups and memory."""
    import torch

    from compressor.bench import kd_providers, report
    from compressor.bench import kernels_table as kt

    dev = _device(device)
    if clock == "cpu" and dev.type != "cpu":
        raise click.BadParameter("CPU time is measured on the CPU device only", param_hint="--clock")
    if threads:
        torch.set_num_threads(threads)
    both = ("classification", "large-vocab")
    grids = {"auto": both[:1] if dev.type == "cpu" else both, "all": ("small", *both)}.get(grid, (grid,))
    shapes = []
    if "small" in grids:
        shapes += kt.small_grid(kt.DTYPES["float32" if dtype == "auto" else dtype], quick=quick)
    if "classification" in grids:
        shapes += kt.classification_grid(kt.DTYPES["float32" if dtype == "auto" else dtype], quick=quick)
    if "large-vocab" in grids:
        lv_dtype = ("bfloat16" if dev.type == "cuda" else "float32") if dtype == "auto" else dtype
        lv_batch = batch or (8192 if dev.type == "cuda" else 64)
        shapes += kt.large_vocab_grid(kt.DTYPES[lv_dtype], quick=quick, batch=lv_batch)
    meta = report.machine_info(dev)
    meta["clock"] = clock
    meta["available_providers"] = kd_providers.available_providers(dev)
    click.echo(
        f"multi_teacher_kd on {meta.get('gpu') or meta['cpu']} ({dev}, {meta['torch_threads']} threads); "
        f"providers available: {', '.join(meta['available_providers'])}; {len(shapes)} shapes"
    )

    def write(rows: list[dict]) -> None:
        report.write_outputs(json_path, md_path, "multi_teacher_kd forward+backward", meta, kt.COLUMNS,
                             kt.sort_rows(rows), kt.NOTES)

    def progress(shape, rows):
        done = [r for r in rows if (r["K"], r["B"], r["C"]) == (shape.k, shape.b, shape.c)]
        summary = ", ".join(
            f"{r['provider']} {r['median_ms']:.3f} ms" if r["median_ms"] is not None else f"{r['provider']} —"
            for r in done
        )
        click.echo(f"  {shape.grid} K={shape.k} B={shape.b} C={shape.c} {shape.dtype}: {summary}")
        write(rows)

    rows = kt.run_grid(
        shapes,
        dev,
        providers=_split_names(impls),
        check=not no_check,
        measure_memory=not no_memory,
        timing=_timing(quick, seconds, not no_l2_flush, clock),
        max_seconds=max_seconds,
        on_shape=progress,
    )
    write(rows)
    report.print_table("multi_teacher_kd, forward+backward", kt.COLUMNS, kt.sort_rows(rows), group_key=kt.group_of)
    click.echo(kt.NOTES)


@bench.command("averaging")
@click.option("--device", type=click.Choice(DEVICES), default="auto", show_default=True)
@click.option(
    "--params",
    type=float,
    default=None,
    help="Size of the many-small-tensors list in millions of elements (default 100).",
)
@click.option("--no-resnet", is_flag=True, help="Skip the ResNet-18 case.")
@click.option(
    "--impl",
    "impls",
    multiple=True,
    help="Providers, comma-separated or repeated: reference, cpp, cuda, triton, foreach_lerp, loop "
    "(default: all available).",
)
@click.option("--quick", is_flag=True, help="Shorter measurements.")
@click.option("--seconds", type=float, default=None, help="Target measuring time per provider and case.")
@click.option("--threads", type=int, default=None, help="torch.set_num_threads before measuring (CPU).")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), default=None, help="Write rows + machine, JSON.")
@click.option("--markdown", "md_path", type=click.Path(dir_okay=False), default=None, help="Write a markdown section.")
def averaging_command(device, params, no_resnet, impls, quick, seconds, threads, json_path, md_path) -> None:
    """average_weights_ vs torch._foreach_lerp_ vs a per-tensor loop, with copy ratio and the no-sync check."""
    import torch

    from compressor.bench import averaging as av
    from compressor.bench import report

    dev = _device(device)
    if threads:
        torch.set_num_threads(threads)
    n = int(params * 1e6) if params is not None else av.DEFAULT_PARAMS
    meta = report.machine_info(dev)
    meta["available_providers"] = av.available_providers(dev)
    meta["many_small_params"] = n
    click.echo(
        f"average_weights_ on {meta.get('gpu') or meta['cpu']} ({dev}, {meta['torch_threads']} threads); "
        f"providers available: {', '.join(meta['available_providers'])}; many-small list: {n / 1e6:g}M elements"
    )

    def write(rows: list[dict]) -> None:
        report.write_outputs(json_path, md_path, "average_weights_", meta, av.COLUMNS, rows, av.NOTES)

    def progress(name, rows):
        click.echo(f"  {name}: done")
        write(rows)

    rows = av.run_averaging(
        dev,
        providers=_split_names(impls),
        params=n,
        resnet=not no_resnet,
        timing=_timing(quick, seconds),
        on_case=progress,
    )
    write(rows)
    report.print_table("average_weights_", av.COLUMNS, rows, group_key=lambda r: r["case"])
    click.echo(av.NOTES)
