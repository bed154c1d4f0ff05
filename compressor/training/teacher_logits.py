"""Where the teachers' logits of a batch come from: the one boundary a logit cache or a distributed wrapper replaces.

The distillation loop asks a ``TeacherLogits`` for ``[K, B, C]`` logits of a batch (its inputs and their indices
in the training split) and never touches the teachers itself. A cache would key on ``index`` (valid only when the
teachers are deterministic: no augmentation, no fickle dropout); a DDP set-up would shard the batch behind it.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from compressor.methods.teacher_noise import enable_dropout


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
        self.fickle = fickle
        self.deterministic = not fickle
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
