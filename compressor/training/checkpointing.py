"""Epoch-level training checkpoints for ``--resume``: models, optimisers, schedules, averaged model, RNG states.

The training loop (``compressor.training.loop``) saves its state at the end of every epoch through an
``EpochCheckpoints``; ``compressor run --resume`` loads it and the loop continues with the next epoch, so the
finished run equals (bit for bit on CPU) a run that was never interrupted. What a loop saves is two plain mappings
of tensors and Python values:

* ``shared``: state that is identical on every rank (models synchronised by DDP, optimisers, schedules, method
  state, the shared batch generator, histories); rank 0's copy is stored;
* ``own``: state that differs between ranks (torch's global RNG, which drives dropout; in the teachers stage, the
  whole state of the teacher each rank trains); every rank's copy is gathered to rank 0 and stored by rank.

The file is written by rank 0 alone, atomically (temporary file + rename): a run killed at any moment leaves
either the previous epoch's checkpoint or the new one, never half of one. It records the key of the work it
belongs to (stage key, number of processes, ...): a checkpoint of another spec is ignored. It is loaded with
``torch.load(weights_only=True)``: tensors and plain values only, no arbitrary pickle.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from compressor import distributed
from compressor.distributed import DistInfo
from compressor.io import atomic_path

FORMAT = 3  # bump when the layout of a checkpoint changes (older ones are then ignored)


@dataclass
class EpochState:
    """What a loop needs to continue after ``epoch`` (0-based, completed): its shared and its own state."""

    epoch: int
    shared: dict[str, Any] = field(default_factory=dict)
    own: dict[str, Any] = field(default_factory=dict)


class EpochCheckpoints:
    """One checkpoint file of one piece of work, written by rank 0 at the end of every epoch.

    Args:
        path: the checkpoint file (under the run directory's ``.compressor/checkpoints/``).
        key: identity of the work; a file with another key is never resumed from.
        dist: this process's place in the run (single process by default).
        resume: whether ``load`` may return a saved state (``--resume``); without it every loop starts over.
    """

    def __init__(self, path: str | Path, key: str, dist: DistInfo | None = None, resume: bool = True):
        self.path = Path(path)
        self.dist = dist or DistInfo()
        self.key = f"{key}:world={self.dist.world_size}:format={FORMAT}"
        self.resume = resume

    def read(self) -> dict | None:
        """The raw checkpoint if it exists, is readable and has this key (rank 0's view; no collective)."""
        try:
            raw = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception:  # noqa: BLE001 - an unreadable checkpoint is simply not resumable
            return None
        return raw if isinstance(raw, dict) and raw.get("key") == self.key else None  # the key names the world size

    def load(self) -> EpochState | None:
        """This rank's state to resume from, or None (collective: every rank calls it once, before training)."""
        raw = self.read() if (self.resume and self.dist.is_main) else None
        found = distributed.broadcast_object(None if raw is None else (raw["epoch"], raw["shared"]))
        if found is None:
            return None
        own = distributed.scatter_from_main(raw["own"] if self.dist.is_main else None)
        return EpochState(*found, own)  # found: (epoch, shared)

    def save(self, epoch: int, shared: dict[str, Any] | None = None, own: dict[str, Any] | None = None) -> None:
        """Store the state after ``epoch`` (collective: every rank calls it with its ``own`` part)."""
        everyone = distributed.gather_to_main(own or {})
        if not self.dist.is_main:
            return
        with atomic_path(self.path) as tmp:
            torch.save({"key": self.key, "epoch": epoch, "shared": shared or {}, "own": everyone}, tmp)

    def remove(self) -> None:
        """Delete the checkpoint (rank 0; the work it belongs to is finished)."""
        if self.dist.is_main:
            self.path.unlink(missing_ok=True)


def cpu_copy(state: Any) -> Any:
    """``state`` with every tensor detached, cloned and moved to the CPU (nested dicts, lists and tuples)."""
    if isinstance(state, torch.Tensor):
        return state.detach().to("cpu", copy=True)
    if isinstance(state, dict):
        return {k: cpu_copy(v) for k, v in state.items()}
    if isinstance(state, (list, tuple)):
        return type(state)(cpu_copy(v) for v in state)
    return state


def rng_state(device: torch.device | str) -> dict[str, torch.Tensor]:
    """Torch's global RNG state (drives dropout and initialisation) and, on CUDA, the device's."""
    state = {"cpu": torch.get_rng_state()}
    if torch.device(device).type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(torch.device(device))
    return state


def restore_rng(state: dict[str, torch.Tensor], device: torch.device | str) -> None:
    """Set torch's global RNG (and the CUDA device's) back to ``state``."""
    torch.set_rng_state(state["cpu"])
    if "cuda" in state and torch.device(device).type == "cuda":
        torch.cuda.set_rng_state(state["cuda"], torch.device(device))
