"""Rounding helper shared by the kernels.

``TRITON_INTERPRET=1`` (Triton 3.8) converts float32 to bfloat16 by truncating the mantissa instead of rounding to
nearest even (its ``_convert_float`` ignores the rounding mode on that path), which makes interpreted results differ
from compiled ones and from PyTorch by one bfloat16 ulp on about half of the elements. ``cast_rne`` rounds to
bfloat16 with integer arithmetic instead, the same algorithm as ``c10::BFloat16``; it is exact in both modes and costs
a few integer operations per element in kernels that are bound by memory traffic. Every other target dtype goes
through ``.to()``, which rounds to nearest even in both modes.
"""

import triton
import triton.language as tl


@triton.jit
def cast_rne(x, dtype: tl.constexpr):
    """``x`` (float32 or wider) converted to ``dtype``, rounding to nearest even."""
    if dtype == tl.bfloat16:
        bits = x.to(tl.float32).to(tl.uint32, bitcast=True)
        rounded = (bits + (0x7FFF + ((bits >> 16) & 1))) >> 16
        half = tl.where(x != x, 0x7FC0, rounded).to(tl.uint16)  # NaN stays a quiet NaN
        return half.to(tl.bfloat16, bitcast=True)
    else:
        return x.to(dtype)
