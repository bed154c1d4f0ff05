"""A teacher view pool: the teachers' outputs for ``V`` augmented views of every training image, computed once.

Fast Knowledge Distillation (Shen and Xing, ECCV 2022) and ReLabel (Yun et al., CVPR 2021) store a teacher's soft
labels per crop so that training a student no longer runs the teacher. Here every training image gets ``V`` views
(crop offsets and flips drawn from the spec's seed, ``compressor.training.view_pool_build``); all K teachers run
once over the ``N x V`` views; in each epoch the student trains on one stored view per image
(``compressor.training.view_plan.StoredViews``) and its KD target is read back by ``(image, view)``: exactly the
teachers' output for the input the student sees.

The pool is a directory of memory-mapped ``.npy`` files (never loaded whole) and ``pool.json``, written last with
the key of the inputs it was computed from (no key file, or another key, means "recompute"):

``views.npy``      int16 ``[N, V, 3]``: crop offsets ``(dy, dx)`` in the zero-padded image and flip (0/1) per view.
``logits.npy``     float16 ``[N, V, K, C]``: storage ``logits``, the teachers' logits as they are (few classes,
                   multi-label outputs, or teacher noise that needs every logit).
``top_logp.npy``   float16 ``[N, V, K, k]``: storage ``top_k`` (many classes), the k largest log-probabilities at
                   temperature 1; ``top_class.npy`` int16/int32 ``[N, V, K, k]`` their classes; ``log_rest.npy``
                   float16 ``[N, V, K]`` the log of the probability mass of the other ``C - k`` classes.

Precision. float16 keeps 11 significant bits: a stored logit is off by at most ``2^-11`` of its value. Storage
``top_k`` also approximates: it spreads the remaining mass ``r`` evenly over the ``C - k`` other classes, so the
KD op reads ``log(r / (C - k))`` for each of them. The top-k probabilities and the tail's total mass at temperature
1 are kept; at temperature ``tau`` the softened target ``q ~ p^(1 / tau)`` gives the tail too much mass (by
Jensen, an even spread maximises ``sum p_i^(1/tau)`` for a fixed sum), and the gate's entropy is over-estimated the
same way. The build measures this error on the pool's own outputs (total-variation distance between the exact and
the reconstructed softened distributions at temperatures 1, 2, 4 and 8) and records it in ``pool.json``.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from compressor.io import read_json
from compressor.training.view_plan import StoredViews

POOL_FORMAT = 1  # bump when the layout changes
FLOAT16_MAX = float(np.finfo(np.float16).max)
EXACT_MAX_CLASSES = 64  # up to this many classes the logits are stored whole
TOP_K = 16  # classes kept per teacher and view above that
ERROR_TEMPERATURES = (1.0, 2.0, 4.0, 8.0)  # where the top-k approximation error is measured
META = "pool.json"
VIEWS = "views.npy"
LOGITS = "logits.npy"
TOP_LOGP, TOP_CLASS, LOG_REST = "top_logp.npy", "top_class.npy", "log_rest.npy"
FILES = {"logits": (VIEWS, LOGITS), "top_k": (VIEWS, TOP_LOGP, TOP_CLASS, LOG_REST)}


class PoolOverflow(ValueError):
    """A teacher logit does not fit float16 (|z| > 65504) or is not finite: the pool cannot hold it."""


def compress_top_k(logits: Tensor, k: int) -> tuple[Tensor, Tensor, Tensor]:
    """``(top log-probabilities [..., k], their classes [..., k], log of the remaining mass [...])`` at temperature 1.

    The remaining mass is summed in log space (``logsumexp`` of the other classes' log-probabilities), so it stays
    accurate when it is tiny (``1 - sum(top)`` would cancel).
    """
    log_p = torch.log_softmax(logits.float(), dim=-1)
    top, classes = log_p.topk(k, dim=-1)
    log_rest = torch.logsumexp(log_p.scatter(-1, classes, -math.inf), dim=-1)
    return top, classes, log_rest


def expand_top_k(top_logp: Tensor, top_class: Tensor, log_rest: Tensor, num_classes: int) -> Tensor:
    """Logits ``[..., C]`` the KD op can read from a top-k record: the kept log-probabilities, and
    ``log(rest / (C - k))`` for every other class (the remaining mass spread evenly)."""
    k = top_logp.shape[-1]
    fill = (log_rest.float() - math.log(num_classes - k))[..., None]
    out = fill.expand(*log_rest.shape, num_classes).clone()
    return out.scatter_(-1, top_class.long(), top_logp.float())


def softened_tv(exact: Tensor, approx: Tensor, temperature: float) -> Tensor:
    """Total-variation distance per row between ``softmax(exact / T)`` and ``softmax(approx / T)``."""
    p, q = torch.softmax(exact.float() / temperature, -1), torch.softmax(approx.float() / temperature, -1)
    return 0.5 * (p - q).abs().sum(-1)


class ViewPool:
    """A complete view pool on disk (see the module docstring), memory-mapped for reading.

    Args:
        directory: where its files are.
        meta: the content of ``pool.json``.
        arrays: the memory-mapped arrays by file name.
    """

    def __init__(self, directory: Path, meta: dict, arrays: dict[str, np.ndarray]):
        self.directory, self.meta, self.arrays = Path(directory), meta, arrays
        self.images, self.views, self.teachers, self.classes = (int(meta[k]) for k in ("images", "views", "teachers",
                                                                                      "classes"))
        self.storage: str = meta["storage"]
        self.rows: np.ndarray | None = None  # set by ``subset``: the pool's row of each row the loop trains on

    def subset(self, rows: np.ndarray) -> ViewPool:
        """The same pool read through ``rows`` (a distillation that leaves rows out): its row ``i`` is row
        ``rows[i]`` of the training split the pool was computed for."""
        pool = ViewPool(self.directory, self.meta, self.arrays)
        pool.rows = np.asarray(rows, dtype=np.int64) if self.rows is None else self.rows[rows]
        return pool

    @property
    def shape(self) -> tuple[int, int, int, int]:
        """``(N images, V views, K teachers, C classes)``."""
        return self.images, self.views, self.teachers, self.classes

    @property
    def nbytes(self) -> int:
        """Bytes of the pool's arrays."""
        return int(sum(a.nbytes for a in self.arrays.values()))

    def plan(self) -> StoredViews:
        """The batch source's view plan: one of the stored views per row and epoch."""
        views = self.arrays[VIEWS] if self.rows is None else self.arrays[VIEWS][self.rows]
        return StoredViews(views, self.meta["crop_padding"] > 0, self.meta["hflip"])

    def lookup(self, index: Tensor, view: Tensor, device: torch.device | str) -> Tensor:
        """The teachers' ``[K, B, C]`` float32 logits of training rows ``index`` in their stored views ``view``."""
        rows, cols = index.cpu().numpy(), view.cpu().numpy()
        if self.rows is not None:
            rows = self.rows[rows]
        if self.storage == "logits":
            stored = torch.from_numpy(np.asarray(self.arrays[LOGITS][rows, cols]))  # [B, K, C] float16
            logits = stored.to(device=device, dtype=torch.float32)
        else:
            parts = [torch.from_numpy(np.asarray(self.arrays[name][rows, cols])).to(device)
                     for name in (TOP_LOGP, TOP_CLASS, LOG_REST)]
            logits = expand_top_k(*parts, self.classes)
        return logits.transpose(0, 1).contiguous()

    @classmethod
    def open(cls, directory: str | Path, key: str) -> ViewPool | None:
        """The pool in ``directory`` if it was computed for ``key`` and is complete, else None (read only)."""
        directory = Path(directory)
        try:
            meta = read_json(directory / META)
            if not isinstance(meta, dict) or meta.get("key") != key or meta.get("format") != POOL_FORMAT:
                return None
            arrays = {name: np.load(directory / name, mmap_mode="r") for name in FILES[meta["storage"]]}
            if any(list(a.shape) != meta["shapes"][name] or str(a.dtype) != meta["dtypes"][name]
                   for name, a in arrays.items()):
                return None
            return cls(directory, meta, arrays)
        except (OSError, ValueError, KeyError, TypeError):  # ValueError includes json.JSONDecodeError
            return None
