"""Public API of the two fused ops, dispatching to an implementation.

The training code calls only these two functions. The implementation is chosen by the ``impl=`` argument, else by
the environment variable ``COMPRESSOR_IMPL``, else ``auto``:

* ``reference``: pure PyTorch (``compressor/reference.py``), always available.
* ``cpp``: the C++ CPU kernels in ``compressor._C`` (CPU tensors).
* ``cuda``: the CUDA kernels in ``compressor._C`` (CUDA tensors, when the extension was built with nvcc).
* ``triton``: the Triton kernels in ``compressor.kernels`` (CUDA tensors, or CPU tensors under ``TRITON_INTERPRET=1``).
* ``auto``: the fastest implementation available for the tensors' device (see ``AUTO_ORDER``).

This module imports nothing beyond torch, so it works without the spec stack (pydantic, yaml).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

import torch
from torch import Tensor

from compressor import reference
from compressor._ext import cpp_loaded, has_kernel, triton_usable

IMPLS = ("reference", "cpp", "cuda", "triton")
# Preference of ``auto`` per device type, fastest first (benchmarks/RESULTS.md holds the measurements behind it).
AUTO_ORDER = {"cpu": ("cpp", "reference"), "cuda": ("cuda", "triton", "reference")}
ENV_VAR = "COMPRESSOR_IMPL"


# Constant for a process (probes the extension and the dispatcher): torch.compile evaluates it once at trace time
# instead of graph-breaking on the dispatcher query, so compiled code can call the ops with fullgraph=True.
@torch.compiler.assume_constant_result
def available_impls(device: torch.device | str = "cpu", op: str = "multi_teacher_kd") -> list[str]:
    """Names of the implementations of ``op`` that can run on tensors of ``device``, in ``IMPLS`` order."""
    device = torch.device(device)
    names = ["reference"]
    if device.type == "cpu" and cpp_loaded() and has_kernel(f"compressor::{op}", "CPU"):
        names.append("cpp")
    if device.type == "cuda" and cpp_loaded() and has_kernel(f"compressor::{op}", "CUDA"):
        names.append("cuda")
    if triton_usable(device):
        names.append("triton")
    return names


def resolve_impl(impl: str | None, device: torch.device | str, op: str = "multi_teacher_kd") -> str:
    """Turn ``impl`` (or ``$COMPRESSOR_IMPL``, or ``auto``) into a concrete implementation name for ``device``.

    Raises:
        ValueError: the name is unknown or not available here; the message lists what is available.
    """
    device = torch.device(device)
    name = (impl or os.environ.get(ENV_VAR) or "auto").strip().lower()
    available = available_impls(device, op)
    if name == "auto":
        return next(n for n in AUTO_ORDER.get(device.type, ("reference",)) if n in available)
    if name not in IMPLS:
        raise ValueError(f"unknown implementation {name!r}; choose one of auto, {', '.join(IMPLS)}")
    if name not in available:
        source = "impl=" if impl else f"${ENV_VAR}"
        raise ValueError(
            f"implementation {name!r} (from {source}) of {op} is not available for {device.type} tensors here; "
            f"available: auto, {', '.join(available)}"
        )
    return name


def _row_weights(weights: Tensor, k: int, b: int, dtype: torch.dtype) -> Tensor:
    """Weights as a contiguous ``[K, B]`` tensor in the accumulation dtype (K*B numbers: negligible traffic)."""
    w = weights.detach().to(dtype)
    return (w[:, None].expand(k, b) if w.dim() == 1 else w).contiguous()


def multi_teacher_kd(
    student_logits: Tensor,
    teacher_logits: Tensor,
    weights: Tensor,
    *,
    temperature: float,
    gate_threshold: float = math.inf,
    mode: str = "multiclass",
    renormalize: bool = False,
    impl: str | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Fused, entropy-gated, weighted multi-teacher KD loss per row (contract in ``compressor/reference.py``).

    Args:
        student_logits: ``[B, C]`` student logits; the only input that receives a gradient.
        teacher_logits: ``[K, B, C]`` stacked teacher logits (fp32, bf16 or fp16).
        weights: ``[K]`` or ``[K, B]`` teacher weights.
        temperature: ``tau > 0``.
        gate_threshold: entropy gate ``chi`` in nats (``inf`` keeps every teacher).
        mode: ``"multiclass"`` or ``"multilabel"``.
        renormalize: divide the gated weights by their per-row sum.
        impl: ``auto|reference|cpp|cuda|triton``; ``None`` reads ``$COMPRESSOR_IMPL``.

    Returns:
        ``(loss[B] float32, keep[K, B] bool, entropy[K, B] float32)``. The caller averages the loss over rows.
    """
    reference.check_kd_arguments(student_logits, teacher_logits, weights, temperature, mode)
    name = resolve_impl(impl, student_logits.device)
    kwargs = dict(
        temperature=float(temperature), gate_threshold=float(gate_threshold), mode=mode, renormalize=renormalize
    )
    if name == "reference":
        return reference.multi_teacher_kd(student_logits, teacher_logits, weights, **kwargs)
    k, b, _ = teacher_logits.shape
    w = _row_weights(weights, k, b, reference.accumulation_dtype(student_logits.dtype))
    if name == "triton":
        import compressor.kernels  # noqa: F401  (registers the Triton ops on first use)
    op = torch.ops.compressor.multi_teacher_kd_triton if name == "triton" else torch.ops.compressor.multi_teacher_kd
    loss, keep, entropy, _ = op(
        student_logits.contiguous(),
        teacher_logits.detach().contiguous(),
        w,
        float(temperature),
        float(gate_threshold),
        mode == "multilabel",
        bool(renormalize),
    )
    return loss, keep, entropy


def _weight_tensor(weight: float | Tensor, device: torch.device) -> Tensor:
    """The averaging weight as a 0-d tensor on ``device`` (no host synchronisation when already there).

    A Python number becomes float64 and a float64 tensor stays float64, so float64 parameters get the weight
    unrounded (as the reference does); other tensors become float32. The kernels round it to float32 for tensors
    that are not float64.
    """
    if isinstance(weight, Tensor):
        dtype = torch.float64 if weight.dtype == torch.float64 else torch.float32
        return weight.detach().to(device=device, dtype=dtype).reshape(())
    return torch.tensor(float(weight), dtype=torch.float64, device=device)


def average_weights_(
    averaged: Sequence[Tensor], current: Sequence[Tensor], weight: float | Tensor, *, impl: str | None = None
) -> None:
    """In place, for every pair: ``averaged[i] += (current[i] - averaged[i]) * weight``; integer tensors are copied.

    Args:
        averaged: tensors updated in place (e.g. the averaged model's parameters and buffers).
        current: tensors of the same shapes, dtypes and devices (the live model's).
        weight: ``1 / (n + 1)`` for RoS-KD's running mean, ``1 - decay`` for an EMA; a number or a 0-d tensor.
        impl: ``auto|reference|cpp|cuda|triton``; ``None`` reads ``$COMPRESSOR_IMPL``.
    """
    averaged, current = list(averaged), list(current)
    reference.check_average_arguments(averaged, current)
    if not averaged:
        return
    devices = {t.device for t in averaged}
    if len(devices) != 1:
        raise ValueError(f"average_weights_: all tensors must be on one device, got {sorted(map(str, devices))}")
    device = averaged[0].device
    name = resolve_impl(impl, device, "average_weights_")
    if name == "reference":
        reference.average_weights_(averaged, current, weight)
        return
    w = _weight_tensor(weight, device)
    if name == "triton":
        import compressor.kernels  # noqa: F401

        torch.ops.compressor.average_weights_triton_(averaged, current, w)
    else:
        torch.ops.compressor.average_weights_(averaged, current, w)
