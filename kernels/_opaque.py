"""Keeping a ``triton_op`` whole under ``torch.compile``.

Compiled, ``triton_op`` decomposes an op into its kernel launch (a ``triton_kernel_wrapper`` node Inductor can
schedule). Where that is wrong (interpreted kernels; a launch that reaches its tensors through addresses in a table),
a rule on ``FunctionalTensorMode`` keeps the op one opaque node instead, auto-functionalized like any custom op.
"""

from __future__ import annotations


def keep_opaque_under_functionalization(op) -> None:
    """Register the rule on ``op`` (a ``torch.library.triton_op``): functionalization dispatches it whole."""
    from torch._subclasses.functional_tensor import FunctionalTensorMode

    def dispatch_whole(mode, op_, types, args, kwargs):
        return mode.__torch_dispatch__(op_, types, args, kwargs)

    op.register_torch_dispatch(FunctionalTensorMode, dispatch_whole)
