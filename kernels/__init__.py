"""Triton kernels of the fused ops, packaged as ``compressor.kernels`` (one op per module).

Importing this package registers ``torch.ops.compressor.multi_teacher_kd_triton`` and
``torch.ops.compressor.average_weights_triton_`` (``torch.library.triton_op``). It needs only torch and triton;
``compressor/ops.py`` imports it lazily the first time ``impl="triton"`` is used.
"""

from . import average_weights, multi_teacher_kd

__all__ = ["average_weights", "multi_teacher_kd"]
