"""The backward of the fused KD op: scale the gradient rows written by the forward."""

from __future__ import annotations

import torch
from torch import Tensor


def scale_rows(row_grad: Tensor, grad_loss: Tensor, dtype: torch.dtype) -> Tensor:
    """``grad_loss[b] * row_grad[b, :]`` written once in ``dtype``: d/dS sum_b g[b] loss[b] = g[b] d loss[b] / d S[b].

    The product is computed in the accumulation dtype and rounded once into the output (``out=``), so half-precision
    inputs need no float32 ``[B, C]`` temporary; the only new ``[B, C]`` tensor is the returned gradient.
    """
    out = torch.empty(row_grad.shape, dtype=dtype, device=row_grad.device)
    return torch.mul(row_grad, grad_loss[:, None], out=out)
