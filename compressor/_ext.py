"""Loading of the compiled extension ``compressor._C`` and availability probes for the op implementations."""

from __future__ import annotations

import functools
import importlib.util
import os
import sys

import torch


@functools.cache
def cpp_loaded() -> bool:
    """Import ``compressor._C`` (which registers ``torch.ops.compressor.*``) and the Python registrations of its ops.

    Returns False when the extension was not built (pure-Python install); the reference then serves.
    """
    try:
        from compressor import _C  # noqa: F401
    except ImportError:
        return False
    from compressor import op_registration  # noqa: F401  (fake + autograd registrations)

    return True


def has_kernel(op_name: str, dispatch_key: str) -> bool:
    """Whether ``op_name`` (``namespace::name``) has a kernel registered for ``dispatch_key`` (``CPU``, ``CUDA``)."""
    try:
        return torch._C._dispatch_has_kernel_for_dispatch_key(op_name, dispatch_key)
    except RuntimeError:
        return False


def triton_interpreted() -> bool:
    """Whether Triton kernels run through the interpreter on the CPU (``TRITON_INTERPRET=1``).

    Triton chooses when a kernel is defined (``triton.jit`` reads the variable then), so once ``compressor.kernels``
    has defined its kernels this is their choice, whatever the variable says later; before, the variable says what
    Triton will choose. ``kernels._rounding`` holds the kernels' first ``triton.jit`` function.
    """
    rounding = sys.modules.get("compressor.kernels._rounding")
    if rounding is None:
        return os.environ.get("TRITON_INTERPRET", "0") == "1"
    from triton.runtime.interpreter import InterpretedFunction

    return isinstance(rounding.cast_rne, InterpretedFunction)


def triton_usable(device: torch.device) -> bool:
    """Whether the Triton implementation can run on tensors of ``device``."""
    if importlib.util.find_spec("triton") is None:
        return False
    if device.type == "cuda":
        return torch.cuda.is_available()
    return device.type == "cpu" and triton_interpreted()
