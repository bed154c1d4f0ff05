"""One spec seed drives every random choice: each use derives its own seed from it and a name."""

from __future__ import annotations

import hashlib

import torch


def derive_seed(seed: int, *names: object) -> int:
    """A 31-bit seed from the spec seed and a path of names (e.g. ``("teacher", 2, "init")``); stable across runs."""
    digest = hashlib.sha256(":".join([str(seed), *map(str, names)]).encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def generator(seed: int, *names: object) -> torch.Generator:
    """A CPU ``torch.Generator`` seeded with ``derive_seed(seed, *names)``."""
    return torch.Generator().manual_seed(derive_seed(seed, *names))


def seed_everything(seed: int, *names: object) -> None:
    """Seed torch's global generators (model initialisation, dropout) for one unit of work."""
    torch.manual_seed(derive_seed(seed, *names))
