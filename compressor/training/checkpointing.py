"""Epoch-level training checkpoints for ``--resume``: model, optimiser, scheduler, averaged model, RNG states.

A checkpoint is written atomically at the end of every epoch (temporary file + rename), so a run killed at any
moment leaves either the previous epoch's checkpoint or the new one, never half of one. It records the key of the
stage it belongs to: a checkpoint from a different spec is ignored. Tensors and plain Python values only, loaded
with ``torch.load(weights_only=True)`` (no arbitrary pickle).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from compressor.io import atomic_path


@dataclass
class EpochState:
    """Everything needed to continue training after ``epoch`` (0-based, completed)."""

    key: str
    epoch: int
    model: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    scheduler: dict[str, Any]
    generators: dict[str, torch.Tensor]
    torch_rng: torch.Tensor
    history: dict[str, list[float]] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)


def capture(
    key: str,
    epoch: int,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    generators: dict[str, torch.Generator],
    history: dict[str, list[float]],
    extra: dict[str, Any] | None = None,
) -> EpochState:
    """Snapshot the training state at the end of ``epoch`` (tensors cloned to CPU)."""
    return EpochState(
        key=key,
        epoch=epoch,
        model={k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        optimizer=optimizer.state_dict(),
        scheduler=scheduler.state_dict(),
        generators={name: g.get_state() for name, g in generators.items()},
        torch_rng=torch.get_rng_state(),
        history={k: list(v) for k, v in history.items()},
        extra=extra or {},
    )


def save_state(state: EpochState, path: str | Path) -> None:
    """Atomically write ``state`` to ``path``."""
    with atomic_path(path) as tmp:
        torch.save(state.__dict__, tmp)


def load_state(path: str | Path, key: str) -> EpochState | None:
    """The checkpoint at ``path`` if it exists, is readable and belongs to ``key``; else None."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - an unreadable checkpoint is simply not resumable
        return None
    if not isinstance(raw, dict) or raw.get("key") != key:
        return None
    return EpochState(**raw)


def restore(
    state: EpochState,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    generators: dict[str, torch.Generator],
) -> None:
    """Load ``state`` into the live objects so training continues exactly where it stopped."""
    model.load_state_dict(state.model)
    optimizer.load_state_dict(state.optimizer)
    scheduler.load_state_dict(state.scheduler)
    for name, g in generators.items():
        g.set_state(state.generators[name])
    torch.set_rng_state(state.torch_rng)
