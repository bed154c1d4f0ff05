"""Multi-process runs on PyTorch's own launcher (torchrun / torch.distributed.run); no home-made cluster code.

``torchrun --nproc_per_node N -m compressor run SPEC`` (or ``compressor run SPEC --nproc N``, which launches the
same through ``torch.distributed.run``) starts N processes; each calls ``init_distributed`` and gets its rank.
Backend: gloo on CPU, nccl on GPU. Multi-node runs add torchrun's ``--nnodes`` and rendezvous options
(``docs/distributed.md``).

Roles: rank 0 alone writes the run directory (``forbid_writes_under`` makes every other rank refuse to), the other
ranks compute and read what rank 0 wrote. Each rank uses ``cores // processes on its node`` torch threads
(``COMPRESSOR_THREADS`` overrides it), so N processes on one machine do not oversubscribe its cores.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

# Ranks wait for each other at collectives while one of them trains a long teacher or rank 0 runs the data stage:
# the process group's timeout must outlast that (nccl's default is 10 minutes). Override with the variable below.
DEFAULT_TIMEOUT_S = 24 * 3600


class DistributedError(RuntimeError):
    """A multi-process run cannot start as asked (e.g. more processes on a node than GPUs)."""


@dataclass(frozen=True)
class DistInfo:
    """This process's place in the run: rank, world size, local rank (GPU index on its node)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Rank 0 writes every artifact; the others only compute."""
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        """Whether more than one process takes part."""
        return self.world_size > 1

    def sum(self, values: Sequence[float], device: torch.device | str) -> list[float]:
        """``values`` added up over the ranks in float64 (every rank calls it); as they are in a single process."""
        if not self.enabled:
            return list(values)
        return all_reduce_sum(torch.tensor(values, dtype=torch.float64, device=device)).tolist()


def launched_by_torchrun() -> bool:
    """Whether this process was started by torchrun with more than one process in the job."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def threads_per_process(local_world_size: int) -> int:
    """Torch threads for one of ``local_world_size`` processes on a node: ``COMPRESSOR_THREADS`` or cores // procs."""
    explicit = os.environ.get("COMPRESSOR_THREADS")
    if explicit:
        return max(1, int(explicit))
    try:
        cores = len(os.sched_getaffinity(0))  # the CPU cores this process may run on
    except AttributeError:  # macOS, Windows: no affinity mask
        cores = os.cpu_count() or 1
    return max(1, cores // max(1, local_world_size))


def init_distributed(device: torch.device) -> DistInfo:
    """Join the process group torchrun set up (gloo on CPU, nccl on CUDA); a no-op for single-process runs.

    Also sets this process's torch thread count (``threads_per_process``) and, on CUDA, its GPU (``LOCAL_RANK``).

    Raises:
        DistributedError: on CUDA, more processes on this node than GPUs (nccl needs one GPU per process).
    """
    if not launched_by_torchrun():
        return DistInfo()
    exit_with_launcher()
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    if device.type == "cuda" and local_world > torch.cuda.device_count():
        raise DistributedError(f"{local_world} processes on this node but {torch.cuda.device_count()} GPU(s): nccl "
                               "needs one GPU per process (start fewer processes, or use device: cpu for gloo)")
    torch.set_num_threads(threads_per_process(local_world))
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        timeout = timedelta(seconds=int(os.environ.get("COMPRESSOR_DIST_TIMEOUT", DEFAULT_TIMEOUT_S)))
        dist.init_process_group(backend=backend, timeout=timeout)
    return current()


def exit_with_launcher() -> None:
    """Have the kernel kill this worker when its launcher (the torchrun agent) dies (Linux; a no-op elsewhere).

    Without it, a launcher killed with SIGKILL leaves its workers running on; a ``--resume`` started next would
    then write the same run directory as the orphaned rank 0.
    """
    if not sys.platform.startswith("linux"):
        return
    import ctypes
    import signal

    pr_set_pdeathsig = 1
    try:
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)
    except (OSError, AttributeError):
        pass


def shutdown_distributed() -> None:
    """Leave the process group (end of a run)."""
    if dist.is_initialized():
        dist.destroy_process_group()


def current() -> DistInfo:
    """The ``DistInfo`` of this process (single-process defaults when no group is initialised)."""
    if not dist.is_initialized():
        return DistInfo()
    return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def broadcast_object(obj: Any) -> Any:
    """``obj`` from rank 0 on every rank (picklable Python objects; small payloads)."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather_to_main(obj: Any) -> list[Any] | None:
    """Every rank's ``obj`` as a list in rank order on rank 0; None on the other ranks."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return [obj]
    out = [None] * dist.get_world_size() if dist.get_rank() == 0 else None
    dist.gather_object(obj, out, dst=0)
    return out


def scatter_from_main(objs: Sequence[Any] | None) -> Any:
    """Rank r receives ``objs[r]`` of rank 0's list (the other ranks pass None)."""
    if not dist.is_initialized() or dist.get_world_size() == 1:
        return objs[0] if objs else None
    out: list[Any] = [None]
    dist.scatter_object_list(out, list(objs) if dist.get_rank() == 0 else None, src=0)
    return out[0]


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """In-place sum of ``tensor`` over the ranks (returned for chaining; unchanged in a single process)."""
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def broadcast_tensors_(tensors: Sequence[torch.Tensor]) -> None:
    """Overwrite ``tensors`` on every rank with rank 0's values (e.g. batch-norm buffers)."""
    if dist.is_initialized() and dist.get_world_size() > 1:
        for tensor in tensors:
            dist.broadcast(tensor, src=0)


@dataclass(frozen=True)
class Shard:
    """Which rows of each global batch this rank trains on: contiguous, sizes differing by at most one row."""

    rank: int = 0
    world_size: int = 1

    def bounds(self, rows: int) -> tuple[int, int]:
        """``(start, stop)`` of this rank's rows among ``rows`` (``torch.tensor_split`` sizes)."""
        base, extra = divmod(rows, self.world_size)
        start = self.rank * base + min(self.rank, extra)
        return start, start + base + (1 if self.rank < extra else 0)

    def sizes(self, rows: int) -> list[int]:
        """Rows of every rank, in rank order."""
        bounds = [Shard(r, self.world_size).bounds(rows) for r in range(self.world_size)]
        return [stop - start for start, stop in bounds]


def all_gather_rows(local: torch.Tensor, shard: Shard, rows: int, dim: int = 0) -> torch.Tensor:
    """Concatenate every rank's slice ``local`` (rows ``shard.bounds(rows)`` along ``dim``) into the full tensor.

    Slices of unequal size are padded to the largest for the collective and trimmed afterwards.
    """
    if shard.world_size == 1:
        return local
    sizes = shard.sizes(rows)
    width = max(sizes)
    pad = list(local.shape)
    pad[dim] = width - local.shape[dim]
    padded = torch.cat([local, local.new_zeros(pad)], dim=dim) if pad[dim] else local.contiguous()
    parts = [torch.empty_like(padded) for _ in range(shard.world_size)]
    dist.all_gather(parts, padded)
    return torch.cat([part.narrow(dim, 0, size) for part, size in zip(parts, sizes, strict=True)], dim=dim)


# Audit events that create, change or remove files (https://docs.python.org/3/library/audit_events.html).
_WRITE_EVENTS = ("os.rename", "os.remove", "os.rmdir", "os.mkdir", "os.truncate", "os.chmod", "os.symlink",
                 "os.link", "shutil.rmtree", "shutil.copyfile", "shutil.move", "os.utime")
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_TRUNC


def forbid_writes_under(root: str | Path, rank: int) -> None:
    """Make this process refuse to create, change or remove anything under ``root`` (a Python audit hook).

    Installed on every rank but 0 of a distributed run, so "rank 0 alone writes the run directory" is enforced
    rather than hoped for: a write attempted by another rank raises ``PermissionError`` and fails the run. It sees
    every write made through Python (``open``, ``os.open``/``mkstemp``, renames, removals, ``mkdir``), which covers
    ``compressor.io.atomic_path`` and so every artifact, and ``torch.save`` to a path (which opens its file in C++,
    so it is wrapped here). Audit hooks cannot be removed: use it in worker processes only.
    """
    base = os.path.realpath(os.fspath(root))

    def inside(path: Any) -> bool:
        if isinstance(path, int) or path is None:  # a file descriptor: its opening was checked already
            return False
        try:
            full = os.path.realpath(os.fsdecode(path))
        except (TypeError, ValueError):
            return False
        return full == base or full.startswith(base + os.sep)

    def hook(event: str, args: tuple) -> None:
        if event == "open":
            path, mode, flags = (tuple(args) + (None, None, None))[:3]
            writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
                isinstance(flags, int) and flags & _WRITE_FLAGS)
            paths = [path] if writing else []
        elif event in _WRITE_EVENTS:
            paths = list(args[:2]) if event in ("os.rename", "os.symlink", "os.link", "shutil.copyfile",
                                                "shutil.move") else [args[0]]
        else:
            return
        for path in paths:
            if inside(path):
                raise PermissionError(f"rank {rank} may not write {os.fsdecode(path)}: only rank 0 writes the run "
                                      f"directory {base}")

    sys.addaudithook(hook)
    real_save = torch.save

    def guarded_save(obj: Any, f: Any, *args: Any, **kwargs: Any) -> None:
        if isinstance(f, (str, bytes, os.PathLike)):
            hook("open", (f, "wb", None))
        real_save(obj, f, *args, **kwargs)

    torch.save = guarded_save


def launch(nproc: int, argv: list[str]) -> int:
    """Run ``python -m compressor <argv>`` in ``nproc`` local processes through ``torch.distributed.run``.

    Each process gets ``cores // nproc`` OpenMP threads unless ``OMP_NUM_THREADS`` is already set.

    Returns:
        0 when every process succeeded, else the exit code of the first failed process (rank 0's when it failed).
    """
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import main as torchrun_main

    os.environ.setdefault("OMP_NUM_THREADS", str(threads_per_process(nproc)))
    try:
        torchrun_main(["--standalone", "--nproc_per_node", str(nproc), "-m", "compressor", *argv])
    except ChildFailedError as exc:
        failures = exc.failures
        first = failures.get(0) or failures[min(failures)]
        return first.exitcode if first.exitcode and first.exitcode > 0 else 1
    return 0
