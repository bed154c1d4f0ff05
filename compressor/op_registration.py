"""Fake (meta) kernels of the C++/CUDA ops in ``compressor._C``.

Imported by :func:`compressor._ext.cpp_loaded` right after the extension (whose ``TORCH_LIBRARY`` block in
``csrc/ops.cpp`` defines the schemas and registers the autograd kernel of ``multi_teacher_kd`` in C++). Following
PyTorch's custom-op guidance, the fake kernels describe output metadata only, after asserting the same input form as
the real kernels (``compressor.ops.check_kernel_inputs``), so that ``torch.compile`` and ``torch.library.opcheck``
see one consistent op.
"""

from __future__ import annotations

import torch
from torch import Tensor

from compressor import ops


@torch.library.register_fake("compressor::multi_teacher_kd")
def _multi_teacher_kd_fake(
    student: Tensor,
    teacher: Tensor,
    weights: Tensor,
    temperature: float,
    gate_threshold: float,
    multilabel: bool,
    renormalize: bool,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    ops.check_kernel_inputs(student, teacher, weights, temperature, "multi_teacher_kd")
    return ops.empty_kd_outputs(student, teacher)


@torch.library.register_fake("compressor::average_weights_")
def _average_weights_fake(averaged: list[Tensor], current: list[Tensor], weight: Tensor) -> None:
    torch._check(
        len(averaged) == len(current),
        lambda: f"average_weights_: {len(averaged)} averaged tensors but {len(current)} current tensors",
    )
