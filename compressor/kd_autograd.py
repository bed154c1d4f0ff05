"""Autograd formula of the Triton ``multi_teacher_kd`` op (the C++/CUDA op has the same formula in ``csrc/ops.cpp``).

Its forward returns ``(loss[B], keep[K,B], entropy[K,B], grad[B,C])`` where ``grad`` is ``d loss[b] / d S[b, :]``,
written during the forward in the student's dtype. The backward only scales those rows by the incoming gradient of
``loss``; teachers and weights get no gradient.
"""

from __future__ import annotations

import torch


def setup_context(ctx, inputs, output) -> None:
    """Save the row gradient; ``keep``, ``entropy`` and the row gradient are not differentiable."""
    _, keep, entropy, row_grad = output
    ctx.save_for_backward(row_grad)
    ctx.mark_non_differentiable(keep, entropy, row_grad)
    # Gradients of the non-differentiable outputs stay None: materialising them would allocate a [B, C] zero tensor
    # (for the row-gradient output) in every backward.
    ctx.set_materialize_grads(False)


def backward(ctx, grad_loss, grad_keep, grad_entropy, grad_row_grad):
    """Gradient for the student logits only (the 7 op arguments: S, T, w, tau, chi, multilabel, renormalize)."""
    (row_grad,) = ctx.saved_tensors
    grad_student = None
    if ctx.needs_input_grad[0] and grad_loss is not None:
        # d/dS sum_b g[b] loss[b] = g[b] d loss[b] / d S[b]: the product is computed in the accumulation dtype and
        # rounded once into an output of the row gradient's dtype (out=), so half-precision inputs need no float32
        # [B, C] temporary; the only new [B, C] tensor is the returned gradient.
        grad_student = torch.mul(row_grad, grad_loss[:, None], out=torch.empty_like(row_grad))
    return grad_student, None, None, None, None, None, None
