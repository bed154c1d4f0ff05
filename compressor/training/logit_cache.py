"""Teacher-logit cache: the teachers' logits over the training set, computed once and memory-mapped (float16).

Valid only when the teachers are deterministic for the distillation inputs: teachers in eval mode (no "fickle"
dropout) and no distillation-time augmentation that changes the teachers' input per epoch. Then distillation
reads ``[K, B, C]`` rows by sample index instead of running K teachers on every batch. Storage is float16 (half the
bytes of float32; relative rounding error at most 2^-11, about 5e-4, far below what a temperature-softened
distribution resolves). The ``.npy`` file is written atomically and the key file beside it last, with the key of
the inputs it was computed from: no key file, or another key, means "recompute".
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from compressor.data.batches import iterate_inputs, to_float
from compressor.io import atomic_path, read_json, write_json
from compressor.progress import progress_bar

FLOAT16_MAX = float(np.finfo(np.float16).max)


class CacheOverflow(ValueError):
    """A teacher logit does not fit float16 (|z| > 65504): the cache cannot hold it."""


class TeacherLogitCache:
    """``[K, N, C]`` float16 teacher logits, memory-mapped from an ``.npy`` file."""

    def __init__(self, logits: np.ndarray):
        self.logits = logits

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(K teachers, N training samples, C outputs)``."""
        return tuple(self.logits.shape)  # type: ignore[return-value]

    def lookup(
        self, index: torch.Tensor, device: torch.device | str, dtype: torch.dtype = torch.float32
    ) -> torch.Tensor:
        """Teacher logits ``[K, B, C]`` of the samples ``index`` (a 1-D index tensor), on ``device``."""
        rows = np.asarray(self.logits[:, index.cpu().numpy()])
        return torch.from_numpy(rows).to(device=device, dtype=dtype)

    @staticmethod
    def meta_path(path: Path) -> Path:
        """The key file beside the cache (written last)."""
        return Path(path).with_suffix(".json")

    @classmethod
    def open(cls, path: str | Path, key: str) -> TeacherLogitCache | None:
        """The cache at ``path`` if it was computed for ``key`` and is complete, else None (read only)."""
        path = Path(path)
        meta = cls.meta_path(path)
        if not (path.exists() and meta.exists()):
            return None
        try:
            record = read_json(meta)
            if record.get("key") != key:
                return None
            logits = np.load(path, mmap_mode="r")
        except (OSError, ValueError, json.JSONDecodeError):
            return None
        if list(logits.shape) != record.get("shape") or logits.dtype != np.float16:
            return None
        return cls(logits)

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
        """Run every teacher (eval mode) over ``images`` once and store the logits as float16 at ``path``.

        Raises:
            CacheOverflow: a logit is outside the float16 range (nothing is written then).
        """
        path = Path(path)
        cls.meta_path(path).unlink(missing_ok=True)  # the key is written last: no key, no trusted cache
        for teacher in teachers:
            teacher.eval()
        n = len(images)
        steps = -(-n // batch_size)
        outputs = int(teachers[0](to_float(images[:1], device)).shape[-1])
        shape = (len(teachers), n, outputs)
        with progress_bar("cache teacher logits", steps * len(teachers)) as bar, atomic_path(path) as tmp:
            # Written straight into the memory-mapped file: the cache never has to fit in memory.
            logits = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float16, shape=shape)
            for k, teacher in enumerate(teachers):
                start = 0
                for x in iterate_inputs(images, batch_size, device):
                    out = teacher(x).float().cpu().numpy()
                    if not np.isfinite(out).all() or np.abs(out).max(initial=0.0) > FLOAT16_MAX:
                        raise CacheOverflow(f"teacher {k} has logits outside the float16 range (|z| > {FLOAT16_MAX:g}"
                                            " or not finite); its logits cannot be cached")
                    logits[k, start : start + len(out)] = out
                    start += len(out)
                    bar.advance()
            logits.flush()
            del logits
        write_json(cls.meta_path(path), {"key": key, "shape": list(shape), "dtype": "float16"})
        return cls(np.load(path, mmap_mode="r"))
