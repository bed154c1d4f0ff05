"""Public API of the two fused ops: the one place where their arguments are checked, then dispatch.

The training code calls only these two functions. The implementation is chosen by the ``impl=`` argument, else by
the environment variable ``COMPRESSOR_IMPL``, else ``auto``:

* ``reference``: pure PyTorch (``compressor/reference.py``), always available.
* ``cpp``: the C++ CPU kernels in ``compressor._C`` (CPU tensors).
* ``cuda``: the CUDA kernels in ``compressor._C`` (CUDA tensors, when the extension was built with nvcc).
* ``triton``: the Triton kernels in ``compressor.kernels`` (CUDA tensors, or CPU tensors under ``TRITON_INTERPRET=1``).
* ``auto``: the fastest implementation available for the tensors' device (see ``AUTO_ORDER``).

Every argument is validated here, once, with one error per problem (``check_kd_arguments``,
``check_average_arguments``), and brought to the fused kernels' input form (``kernel_inputs``); the kernels only
assert that form (``check_kernel_inputs`` for the Python ones, ``csrc/kd_common.h`` for C++/CUDA). What mixed dtypes
mean is the reference's contract (``compressor/reference.py``); the fused kernels get both logits in one dtype.

This module imports nothing beyond torch and ``compressor.task`` (numpy), so it works without the spec stack (pydantic,
yaml).
"""

from __future__ import annotations

import functools
import math
import numbers
import os
from collections.abc import Sequence

import torch
from torch import Tensor

from compressor import reference
from compressor._ext import cpp_loaded, has_kernel, triton_interpreted, triton_usable
from compressor.task import Task

IMPLS = ("reference", "cpp", "cuda", "triton")
# Preference of ``auto`` per device type, fastest first (benchmarks/RESULTS.md holds the measurements behind it).
AUTO_ORDER = {"cpu": ("cpp", "reference"), "cuda": ("cuda", "triton", "reference")}
ENV_VAR = "COMPRESSOR_IMPL"
KD_DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16)


@functools.cache
def _available(device_type: str, op: str, interpreted: bool) -> tuple[str, ...]:
    names = ["reference"]
    if device_type == "cpu" and cpp_loaded() and has_kernel(f"compressor::{op}", "CPU"):
        names.append("cpp")
    if device_type == "cuda" and cpp_loaded() and has_kernel(f"compressor::{op}", "CUDA"):
        names.append("cuda")
    if triton_usable(torch.device(device_type)):
        names.append("triton")
    return tuple(names)


# Constant for a process (probes the extension and the dispatcher once per device type): torch.compile evaluates it
# once at trace time instead of graph-breaking on the dispatcher query, so compiled code can call the ops with
# fullgraph=True.
@torch.compiler.assume_constant_result
def available_impls(device: torch.device | str = "cpu", op: str = "multi_teacher_kd") -> list[str]:
    """Names of the implementations of ``op`` that can run on tensors of ``device``, in ``IMPLS`` order."""
    return list(_available(torch.device(device).type, op, triton_interpreted()))


def resolve_impl(impl: str | None, device: torch.device | str, op: str = "multi_teacher_kd") -> str:
    """Turn ``impl`` (or ``$COMPRESSOR_IMPL``, or ``auto``) into a concrete implementation name for ``device``.

    Raises:
        ValueError: the name is unknown or not available here; the message lists what is available.
    """
    device_type = device.type if isinstance(device, torch.device) else torch.device(device).type
    name = (impl or os.environ.get(ENV_VAR) or "auto").strip().lower()
    available = available_impls(device_type, op)
    if name == "auto":
        return next(n for n in AUTO_ORDER.get(device_type, ("reference",)) if n in available)
    if name not in IMPLS:
        raise ValueError(f"unknown implementation {name!r}; choose one of auto, {', '.join(IMPLS)}")
    if name not in available:
        source = "impl=" if impl else f"${ENV_VAR}"
        raise ValueError(
            f"implementation {name!r} (from {source}) of {op} is not available for {device_type} tensors here; "
            f"available: auto, {', '.join(available)}"
        )
    return name


# ---------------------------------------------------------------------------------------------------------------------
# multi_teacher_kd
# ---------------------------------------------------------------------------------------------------------------------


def _is_number(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def check_kd_arguments(
    student_logits: Tensor,
    teacher_logits: Tensor,
    weights: Tensor,
    temperature: float,
    gate_threshold: float = math.inf,
    mode: Task | str = Task.MULTICLASS,
) -> None:
    """Validate the arguments of ``multi_teacher_kd``: one ``TypeError``/``ValueError`` naming the first problem.

    Accepted: ``student_logits [B, C]`` and ``teacher_logits [K >= 1, B, C]`` in float32, float64, bfloat16 or
    float16 (each its own dtype), ``weights [K]`` or ``[K, B]`` of any floating dtype, all on one device; a finite
    ``temperature > 0``; a ``gate_threshold`` that is not NaN (``inf`` keeps every teacher); ``mode`` in
    ``reference.MODES``.
    """
    where = "multi_teacher_kd"
    for name, t in (("student_logits", student_logits), ("teacher_logits", teacher_logits), ("weights", weights)):
        if not isinstance(t, Tensor):
            raise TypeError(f"{where}: {name} must be a tensor, got {type(t).__name__}")
    for name, t in (("student_logits", student_logits), ("teacher_logits", teacher_logits)):
        if t.dtype not in KD_DTYPES:
            raise TypeError(f"{where}: {name} must be floating point (float32, float64, bfloat16 or float16), "
                            f"got {t.dtype}")
    if not weights.dtype.is_floating_point:
        raise TypeError(f"{where}: weights must be floating point, got {weights.dtype}")
    if not isinstance(mode, str) or mode not in reference.MODES:
        raise ValueError(f"{where}: mode must be one of {reference.MODES}, got {mode!r}")
    for name, value in (("temperature", temperature), ("gate_threshold", gate_threshold)):
        if not _is_number(value):
            raise TypeError(f"{where}: {name} must be a real number, got {type(value).__name__}")
    if not (math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"{where}: temperature must be a finite number > 0, got {temperature!r}")
    if math.isnan(gate_threshold):
        raise ValueError(f"{where}: gate_threshold must not be NaN (inf keeps every teacher)")
    if student_logits.dim() != 2:
        raise ValueError(f"{where}: student_logits must be [B, C], got shape {tuple(student_logits.shape)}")
    if teacher_logits.dim() != 3:
        raise ValueError(f"{where}: teacher_logits must be [K, B, C], got shape {tuple(teacher_logits.shape)}")
    k, b, c = teacher_logits.shape
    if k == 0:
        raise ValueError(f"{where}: at least one teacher is needed (K = 0)")
    if (b, c) != tuple(student_logits.shape):
        raise ValueError(
            f"{where}: teacher_logits {tuple(teacher_logits.shape)} do not match student_logits "
            f"{tuple(student_logits.shape)} (expected [K, {student_logits.shape[0]}, {student_logits.shape[1]}])"
        )
    if weights.dim() == 1 and weights.shape[0] != k:
        raise ValueError(f"{where}: weights has {weights.shape[0]} entries for K = {k} teachers")
    if weights.dim() == 2 and tuple(weights.shape) != (k, b):
        raise ValueError(f"{where}: weights must be [K, B] = [{k}, {b}], got {tuple(weights.shape)}")
    if weights.dim() not in (1, 2):
        raise ValueError(f"{where}: weights must be [K] or [K, B], got shape {tuple(weights.shape)}")
    if not student_logits.device == teacher_logits.device == weights.device:
        devices = sorted({str(t.device) for t in (student_logits, teacher_logits, weights)})
        raise ValueError(f"{where}: all tensors must be on one device, got {devices}")


def kernel_inputs(student_logits: Tensor, teacher_logits: Tensor, weights: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Validated arguments in the fused kernels' input form (see ``check_kernel_inputs``).

    Logits of two dtypes are both converted to the student's accumulation dtype (exact for narrower inputs; what the
    reference computes in), the student through a differentiable ``to`` whose backward rounds the gradient back to
    its dtype once. Weights are converted to the accumulation dtype. Nothing is copied that is already in form.
    """
    s, t, w = student_logits, teacher_logits, weights
    acc = reference.accumulation_dtype(s.dtype)
    if t.dtype != s.dtype:
        s, t = s.to(acc), t.to(acc)
    return s.contiguous(), t.contiguous(), w.to(acc)


def check_kernel_inputs(student: Tensor, teacher: Tensor, weights: Tensor, temperature: float, where: str) -> None:
    """Assert the fused kernels' preconditions (``RuntimeError``); the Python twin of ``csrc/kd_common.h``.

    ``student [B, C]`` and ``teacher [K >= 1, B, C]`` contiguous, in one dtype of ``KD_DTYPES``; ``weights [K]`` (the
    same for every row) or ``[K, B]``, any strides, in the accumulation dtype; one device; a finite temperature > 0.
    Symbolic shapes (fake tensors) are checked with ``torch._check``.
    """
    torch._check(
        student.dim() == 2 and teacher.dim() == 3,
        lambda: f"{where}: expected student [B, C] and teacher [K, B, C], got {tuple(student.shape)} and "
        f"{tuple(teacher.shape)}",
    )
    k, b, c = teacher.shape
    torch._check(k >= 1, lambda: f"{where}: at least one teacher is needed (K = 0)")
    torch._check(
        b == student.shape[0] and c == student.shape[1],
        lambda: f"{where}: teacher {tuple(teacher.shape)} does not match student {tuple(student.shape)}",
    )
    torch._check(
        student.dtype in KD_DTYPES and teacher.dtype == student.dtype,
        lambda: f"{where}: student and teacher must share one of {KD_DTYPES}, got {student.dtype} and {teacher.dtype}",
    )
    acc = reference.accumulation_dtype(student.dtype)
    torch._check(
        weights.dtype == acc and tuple(weights.shape) in ((k,), (k, b)),
        lambda: f"{where}: weights must be [K] or [K, B] = [{k}, {b}] in {acc}, got {tuple(weights.shape)} in "
        f"{weights.dtype}",
    )
    torch._check(
        student.is_contiguous() and teacher.is_contiguous(), lambda: f"{where}: student and teacher must be contiguous"
    )
    torch._check(
        student.device == teacher.device == weights.device,
        lambda: f"{where}: all tensors must be on one device, got {student.device}, {teacher.device}, {weights.device}",
    )
    torch._check(
        math.isfinite(temperature) and temperature > 0,
        lambda: f"{where}: temperature must be finite and > 0, got {temperature}",
    )


def empty_kd_outputs(student: Tensor, teacher: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Uninitialised ``(loss[B], keep[K, B] bool, entropy[K, B], grad[B, C])`` of a fused KD kernel (real and fake):
    loss and entropy in the accumulation dtype, grad contiguous in the student's dtype, all on its device."""
    k, b, c = teacher.shape
    acc = reference.accumulation_dtype(student.dtype)
    return (student.new_empty((b,), dtype=acc), student.new_empty((k, b), dtype=torch.bool),
            student.new_empty((k, b), dtype=acc), student.new_empty((b, c)))


def multi_teacher_kd(
    student_logits: Tensor,
    teacher_logits: Tensor,
    weights: Tensor,
    *,
    temperature: float,
    gate_threshold: float = math.inf,
    mode: Task | str = Task.MULTICLASS,
    renormalize: bool = False,
    impl: str | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Fused, entropy-gated, weighted multi-teacher KD loss per row (contract in ``compressor/reference.py``).

    Args:
        student_logits: ``[B, C]`` student logits (float32, float64, bfloat16 or float16); the only input that
            receives a gradient, returned in its dtype.
        teacher_logits: ``[K, B, C]`` stacked teacher logits, in any of those dtypes (it may differ from the
            student's).
        weights: ``[K]`` or ``[K, B]`` teacher weights, any floating dtype.
        temperature: ``tau > 0``.
        gate_threshold: entropy gate ``chi`` in nats (``inf`` keeps every teacher).
        mode: a ``Task`` or its value, ``"multiclass"`` or ``"multilabel"``.
        renormalize: divide the gated weights by their per-row sum.
        impl: ``auto|reference|cpp|cuda|triton``; ``None`` reads ``$COMPRESSOR_IMPL``.

    Returns:
        ``(loss[B], keep[K, B] bool, entropy[K, B])``, loss and entropy in float32 (float64 for a float64
        student). The caller averages the loss over rows.

    Raises:
        TypeError, ValueError: an argument is invalid (see ``check_kd_arguments``) or ``impl`` is not available.
    """
    check_kd_arguments(student_logits, teacher_logits, weights, temperature, gate_threshold, mode)
    name = resolve_impl(impl, student_logits.device)
    if name == "reference":
        return reference.multi_teacher_kd(
            student_logits, teacher_logits, weights, temperature=float(temperature),
            gate_threshold=float(gate_threshold), mode=mode, renormalize=bool(renormalize),
        )
    s, t, w = kernel_inputs(student_logits, teacher_logits, weights)
    if name == "triton":
        import compressor.kernels  # noqa: F401  (registers the Triton ops on first use)

        op = torch.ops.compressor.multi_teacher_kd_triton
    else:
        op = torch.ops.compressor.multi_teacher_kd
    loss, keep, entropy, _ = op(
        s, t, w, float(temperature), float(gate_threshold), Task(mode).multilabel, bool(renormalize)
    )
    return loss, keep, entropy


# ---------------------------------------------------------------------------------------------------------------------
# average_weights_
# ---------------------------------------------------------------------------------------------------------------------


def check_average_arguments(averaged: Sequence[Tensor], current: Sequence[Tensor], weight: float | Tensor) -> None:
    """Validate the arguments of ``average_weights_``: one ``TypeError``/``ValueError`` naming the first problem.

    Accepted: two lists of tensors of equal length, pairwise of one shape and dtype, all on one device; ``weight`` a
    finite real number or a one-element floating tensor.
    """
    where = "average_weights_"
    if len(averaged) != len(current):
        raise ValueError(f"{where}: {len(averaged)} averaged tensors but {len(current)} current tensors")
    for i, (a, c) in enumerate(zip(averaged, current, strict=True)):
        if not (isinstance(a, Tensor) and isinstance(c, Tensor)):
            raise TypeError(f"{where}: pair {i} is not two tensors ({type(a).__name__}, {type(c).__name__})")
        if a.shape != c.shape:
            raise ValueError(f"{where}: tensor {i} shape {tuple(a.shape)} != {tuple(c.shape)}")
        if a.dtype != c.dtype:
            raise TypeError(f"{where}: tensor {i} dtype {a.dtype} != {c.dtype}")
        if a.device != c.device or a.device != averaged[0].device:
            raise ValueError(f"{where}: all tensors must be on one device; tensor {i} is on {a.device} and {c.device}, "
                             f"tensor 0 on {averaged[0].device}")
    if isinstance(weight, Tensor):
        if weight.numel() != 1 or not weight.dtype.is_floating_point:
            raise TypeError(f"{where}: a tensor weight must have one floating element, got {weight.dtype} of shape "
                            f"{tuple(weight.shape)}")
    elif not _is_number(weight):
        raise TypeError(f"{where}: weight must be a real number or a one-element tensor, got {type(weight).__name__}")
    elif not math.isfinite(weight):
        raise ValueError(f"{where}: weight must be finite, got {weight!r}")


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
        current: tensors of the same shapes, dtypes and device (the live model's).
        weight: ``1 / (n + 1)`` for RoS-KD's running mean, ``1 - decay`` for an EMA; a number or a one-element tensor.
        impl: ``auto|reference|cpp|cuda|triton``; ``None`` reads ``$COMPRESSOR_IMPL``.

    Raises:
        TypeError, ValueError: an argument is invalid (see ``check_average_arguments``) or ``impl`` is not available.
    """
    averaged, current = list(averaged), list(current)
    check_average_arguments(averaged, current, weight)
    if not averaged:
        return
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
