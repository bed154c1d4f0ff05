"""Where the teachers' logits of a batch come from: the one boundary that a logit cache or a distributed run replaces.

The distillation hook (``compressor.methods.kd``) asks a teacher source for the ``[K, B, C]`` logits of a batch (its
inputs and their indices in the training split) and never touches the teachers itself. Three sources:

* ``TeacherLogits`` runs the K teachers on the batch (evaluation mode, or fickle teachers with dropout active);
* ``CachedTeacherLogits`` reads them from a ``TeacherLogitCache`` by index (valid only when the teachers are
  deterministic for the distillation inputs: no fickle dropout, no distillation-time augmentation);
* ``ShardedTeacherLogits`` (distributed runs) runs the teachers on this rank's rows of the batch only and gathers
  the other ranks' rows, so every rank holds the whole batch's logits for what follows (logit noise, swapping and
  weights are drawn for the whole batch from a generator that is identical on every rank).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from compressor.distributed import Shard, all_gather_rows
from compressor.training.logit_cache import TeacherLogitCache

DROPOUT_TYPES = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.FeatureAlphaDropout)


def enable_dropout(model: nn.Module) -> int:
    """Put ``model`` in evaluation mode except its dropout layers; returns how many dropout layers are active.

    Batch-norm layers stay in evaluation mode (their running statistics are neither used nor changed).
    """
    model.eval()
    active = 0
    for module in model.modules():
        if isinstance(module, DROPOUT_TYPES):
            module.train()
            active += int(module.p > 0)
    return active


class TeacherLogits:
    """Stacked logits of frozen teachers, in evaluation mode or as fickle teachers (dropout active).

    Args:
        teachers: the K teacher models (moved to ``device``).
        device: where they run.
        fickle: keep each teacher's dropout layers active (the noise-in-KD paper's fickle teacher); batch-norm
            layers stay in evaluation mode either way.
    """

    def __init__(self, teachers: Sequence[nn.Module], device: torch.device | str, fickle: bool = False):
        self.teachers = [teacher.to(device) for teacher in teachers]
        for teacher in self.teachers:
            for p in teacher.parameters():
                p.requires_grad_(False)
            if fickle:
                if enable_dropout(teacher) == 0:
                    raise ValueError("fickle teacher: a teacher has no active dropout layer (train the teachers with "
                                     "teachers.dropout > 0)")
            else:
                teacher.eval()

    def __len__(self) -> int:
        return len(self.teachers)

    @torch.no_grad()
    def __call__(self, x: Tensor, index: Tensor | None = None) -> Tensor:
        """``[K, B, C]`` float32 logits of the batch ``x`` (``index``: its rows in the training split)."""
        return torch.stack([teacher(x).float() for teacher in self.teachers])


class CachedTeacherLogits:
    """Teacher logits read from a ``TeacherLogitCache`` (float16 on disk, float32 here) instead of running the teachers.

    Args:
        cache: the ``[K, N, C]`` cache over the training split the loop distils on.
        device: where the logits are needed.
    """

    def __init__(self, cache: TeacherLogitCache, device: torch.device | str):
        self.cache, self.device = cache, device

    def __len__(self) -> int:
        return self.cache.shape[0]

    def __call__(self, x: Tensor, index: Tensor | None = None) -> Tensor:
        """``[K, B, C]`` float32 logits of the training rows ``index`` (``x`` is not looked at)."""
        if index is None:
            raise ValueError("cached teacher logits are looked up by the batch's row indices; none were given")
        return self.cache.lookup(index, self.device)


class RowsTeacherSource:
    """A teacher source over a selection of the training split (e.g. without the rows the label audit dropped).

    Args:
        inner: a source indexed by rows of the whole training split (e.g. ``CachedTeacherLogits``).
        rows: ``rows[i]`` is the training-split row of the selection's row ``i``.
    """

    def __init__(self, inner, rows):
        self.inner, self.rows = inner, torch.as_tensor(rows, dtype=torch.long)

    def __len__(self) -> int:
        return len(self.inner)

    def __call__(self, x: Tensor, index: Tensor | None = None) -> Tensor:
        """``[K, B, C]`` logits of the batch; ``index`` (rows of the selection) is mapped to the training split."""
        return self.inner(x, None if index is None else self.rows[index.cpu()].to(index.device))


class ShardedTeacherLogits:
    """Run the teachers on this rank's rows of each batch and gather the whole batch's logits from every rank.

    Args:
        inner: the teachers (``TeacherLogits``).
        shard: this rank's part of each batch.
    """

    def __init__(self, inner: TeacherLogits, shard: Shard):
        self.inner, self.shard = inner, shard

    def __len__(self) -> int:
        return len(self.inner)

    def __call__(self, x: Tensor, index: Tensor | None = None) -> Tensor:
        """``[K, B, C]`` logits of the whole batch; this rank computed rows ``shard.bounds(B)`` of them."""
        start, stop = self.shard.bounds(len(x))
        local = self.inner(x[start:stop], None if index is None else index[start:stop])
        return all_gather_rows(local, self.shard, len(x), dim=1)
