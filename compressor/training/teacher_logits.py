"""Where the teachers' logits of a batch come from: the one boundary that a view pool or a distributed run replaces.

The distillation hook (``compressor.methods.kd``) asks a teacher source for the ``[K, B, C]`` logits of a batch (its
inputs, their indices in the training split and, from a view pool, the stored view of each row) and never touches
the teachers itself. Three sources:

* ``TeacherLogits`` runs the K teachers on the batch (``compressor.training.teacher_inference``: evaluation mode or
  fickle teachers with dropout active, inference mode, channels_last, bfloat16 on CUDA);
* ``PooledTeacherLogits`` reads the teachers' stored outputs for each row's view from a ``ViewPool``
  (``compressor.training.view_pool``; the batch source shows the student that same stored view);
* ``ShardedTeacherLogits`` (distributed runs) runs the teachers on this rank's rows of the batch only and gathers
  the other ranks' rows, so every rank holds the whole batch's logits for what follows (logit noise, swapping and
  weights are drawn for the whole batch from a generator that is identical on every rank).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from compressor.distributed import Shard, all_gather_rows
from compressor.training.teacher_inference import inference, is_convolutional, prepare_teacher
from compressor.training.view_pool import ViewPool


class TeacherLogits:
    """Stacked logits of frozen teachers, in evaluation mode or as fickle teachers (dropout active).

    Args:
        teachers: the K teacher models (prepared for inference on ``device`` in place).
        device: where they run.
        fickle: keep each teacher's dropout layers active (the noise-in-KD paper's fickle teacher); batch-norm
            layers stay in evaluation mode either way.
    """

    def __init__(self, teachers: Sequence[nn.Module], device: torch.device | str, fickle: bool = False):
        self.device = torch.device(device)
        self.teachers = [prepare_teacher(teacher, device, fickle) for teacher in teachers]
        self.channels_last = any(is_convolutional(teacher) for teacher in self.teachers)

    def __len__(self) -> int:
        return len(self.teachers)

    def __call__(self, x: Tensor, index: Tensor | None = None, view: Tensor | None = None) -> Tensor:
        """``[K, B, C]`` float32 logits of the batch ``x`` (``index`` and ``view`` are not looked at)."""
        with inference(self.device):
            if self.channels_last and x.dim() == 4:
                x = x.contiguous(memory_format=torch.channels_last)
            outputs = [teacher(x) for teacher in self.teachers]
        return torch.stack(outputs).float()  # outside inference mode: an ordinary tensor the KD op may save


class PooledTeacherLogits:
    """The teachers' stored outputs of each row's view, read from a ``ViewPool`` (float16 there, float32 here).

    Args:
        pool: the view pool over the training split the loop distils on.
        device: where the logits are needed.
    """

    def __init__(self, pool: ViewPool, device: torch.device | str):
        self.pool, self.device = pool, device

    def __call__(self, x: Tensor, index: Tensor, view: Tensor) -> Tensor:
        """``[K, B, C]`` float32 logits of the training rows ``index`` in their stored views ``view`` (the batch's
        views must come from the pool: ``ShuffledBatches(views=pool.plan())``)."""
        return self.pool.lookup(index, view, self.device)


class ShardedTeacherLogits:
    """Run the teachers on this rank's rows of each batch and gather the whole batch's logits from every rank.

    Args:
        inner: the teachers (``TeacherLogits``).
        shard: this rank's part of each batch.
    """

    def __init__(self, inner: TeacherLogits, shard: Shard):
        self.inner, self.shard = inner, shard

    def __call__(self, x: Tensor, index: Tensor | None = None, view: Tensor | None = None) -> Tensor:
        """``[K, B, C]`` logits of the whole batch; this rank computed rows ``shard.bounds(B)`` of them."""
        start, stop = self.shard.bounds(len(x))
        local = self.inner(x[start:stop])
        return all_gather_rows(local, self.shard, len(x), dim=1)
