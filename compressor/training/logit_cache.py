"""Teacher-logit cache: the teachers' logits over the training set, computed once and memory-mapped (float16).

Valid only when the teachers are deterministic for the distillation inputs: teachers in eval mode (no "fickle"
dropout) and no distillation-time augmentation that changes the teachers' input per epoch. Then distillation
reads ``[K, B, C]`` rows by sample index instead of running K teachers on every batch. The file is written
atomically with the key of the inputs it was computed from, and a key mismatch means "recompute".
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from compressor.io import atomic_path, read_json, write_json
from compressor.progress import progress_bar
from compressor.training.batches import iterate_inputs


class TeacherLogitCache:
    """``[K, N, C]`` float16 teacher logits, memory-mapped from an ``.npy`` file."""

    def __init__(self, logits: np.ndarray):
        self.logits = logits

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.logits.shape)  # type: ignore[return-value]

    def lookup(self, index: torch.Tensor, device: torch.device | str, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Teacher logits ``[K, B, C]`` of the samples ``index`` (a 1-D index tensor), on ``device``."""
        rows = np.asarray(self.logits[:, index.cpu().numpy()])
        return torch.from_numpy(rows).to(device=device, dtype=dtype)

    @staticmethod
    def _meta_path(path: Path) -> Path:
        return path.with_suffix(".json")

    @classmethod
    def open(cls, path: str | Path, key: str) -> TeacherLogitCache | None:
        """The cache at ``path`` if it was computed for ``key``, else None."""
        path = Path(path)
        meta = cls._meta_path(path)
        if not (path.exists() and meta.exists()):
            return None
        try:
            if read_json(meta).get("key") != key:
                return None
            return cls(np.load(path, mmap_mode="r"))
        except (OSError, ValueError, json.JSONDecodeError):
            return None

    @classmethod
    @torch.no_grad()
    def build(
        cls,
        path: str | Path,
        key: str,
        teachers: Sequence[torch.nn.Module],
        images: torch.Tensor,
        device: torch.device | str,
        batch_size: int = 512,
    ) -> TeacherLogitCache:
        """Run every teacher (eval mode) over ``images`` once and store the logits as float16 at ``path``."""
        path = Path(path)
        cls._meta_path(path).unlink(missing_ok=True)  # the key is written last: no key, no trusted cache
        for teacher in teachers:
            teacher.eval()
        n = len(images)
        steps = -(-n // batch_size)
        chunks: list[list[np.ndarray]] = [[] for _ in teachers]
        with progress_bar("cache teacher logits", steps * len(teachers)) as bar:
            for k, teacher in enumerate(teachers):
                for x in iterate_inputs(images, batch_size, device):
                    chunks[k].append(teacher(x).float().cpu().numpy().astype(np.float16))
                    bar.advance()
        logits = np.stack([np.concatenate(c) for c in chunks])
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as handle:
                np.save(handle, logits)
        write_json(cls._meta_path(path), {"key": key, "shape": list(logits.shape), "dtype": "float16"})
        return cls(np.load(path, mmap_mode="r"))
