"""Multi-process runs on PyTorch's own launcher (torchrun / torch.distributed.run); no home-made cluster code.

``torchrun --nproc_per_node N -m compressor run SPEC`` (or ``compressor run SPEC --nproc N``, which launches the
same through ``torch.distributed.run``) starts N processes; each calls ``init_distributed`` and gets its rank.
Backend: gloo on CPU, nccl on GPU. Multi-node runs add torchrun's ``--nnodes`` and rendezvous options.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


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
        return self.world_size > 1


def launched_by_torchrun() -> bool:
    """Whether this process was started by torchrun with more than one process in the job."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_distributed(device: torch.device) -> DistInfo:
    """Join the process group torchrun set up (gloo on CPU, nccl on CUDA); a no-op for single-process runs."""
    if not launched_by_torchrun():
        return DistInfo()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend=backend)
    return DistInfo(dist.get_rank(), dist.get_world_size(), local_rank)


def shutdown_distributed() -> None:
    """Leave the process group (end of a run)."""
    if dist.is_initialized():
        dist.destroy_process_group()


def current() -> DistInfo:
    """The ``DistInfo`` of this process (single-process defaults when no group is initialised)."""
    if not dist.is_initialized():
        return DistInfo()
    return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def barrier() -> None:
    """Wait for every rank (no-op in a single process)."""
    if dist.is_initialized():
        dist.barrier()


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """``obj`` from rank ``src`` on every rank (picklable Python objects; tiny payloads only)."""
    if not dist.is_initialized():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def launch(nproc: int, argv: list[str]) -> int:
    """Run ``python -m compressor <argv>`` in ``nproc`` local processes through ``torch.distributed.run``.

    Returns:
        0 when every process succeeded; torch.distributed.run raises ``ChildFailedError`` otherwise.
    """
    from torch.distributed.run import main as torchrun_main

    torchrun_main(["--standalone", "--nproc_per_node", str(nproc), "-m", "compressor", *argv])
    return 0
