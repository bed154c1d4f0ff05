"""Triton multi-tensor kernel of the in-place weight averaging op (``compressor::average_weights_triton_``).

Contract (``compressor/reference.py``): for every pair, ``averaged[i] += (current[i] - averaged[i]) * weight``
(fp32 math for fp16/bf16/fp32, fp64 for fp64; complex tensors as their real and imaginary parts), integer and bool
tensors copied. ``weight`` is a 0-d float32 or float64 tensor on the tensors' device, read by the kernel (no host
sync); float64 tensors use it in float64, the others rounded to float32.

Design: a multi-tensor apply. The floating tensors of one dtype are cut into chunks of ``CHUNK`` elements; a device
table holds one int64 row per chunk ``(address of averaged, address of current, first element, numel)`` and ONE
launch with one program per chunk updates all tensors of that dtype: the program loads its row, bitcasts the two
addresses to typed pointers (``int64.to(pointer_type, bitcast=True)``; this is ``inttoptr`` when compiled and a plain
address under ``TRITON_INTERPRET=1``, where CPU tensors are used in place) and streams its chunk. Full chunks take an
unmasked path whose pointers carry a 16-byte alignment hint (only when every address is 16-byte aligned), so they
compile to 128-bit vector loads and stores; the last chunk of each tensor takes a masked path. Integer and bool
tensors are copied with one ``torch._foreach_copy_``.

The table is built on the host from ``data_ptr()`` and sizes (Python ints: no synchronisation), then sent with one
``non_blocking`` copy from pinned memory. It is a pure function of (addresses, sizes, dtype), so it is cached (small
LRU): the steady state of a training loop, which averages the same parameter storages every time, reuses the device
table and issues only the kernel launches.

CUDA graphs: with the table cached (any call before capture, e.g. the warm-up iterations that capture needs anyway),
a call is only kernel launches that read device memory (table, weight) plus ``_foreach_copy_``, so it is capturable,
and a replay reads the weight tensor's current value. A cache miss during capture (first call, or new storages)
would need a pinned allocation and a host-to-device copy; that raises a clear error instead.

Under ``torch.compile`` the op stays opaque (auto-functionalized like any mutating custom op): the addresses exist
only at run time, so the function is not traced into; its fake implementation does nothing (in-place, no outputs).
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import triton
import triton.language as tl
from torch import Tensor
from torch.library import triton_op, wrap_triton

from compressor import reference

from ._opaque import keep_opaque_under_functionalization
from ._rounding import cast_rne

BLOCK = 2048  # elements per loop step of a program
ITERS = 8  # loop steps per program
CHUNK = BLOCK * ITERS  # elements per program (one table row)
_ALIGN = 16  # bytes: the alignment that allows 128-bit accesses
_TABLE_CACHE: OrderedDict[tuple, Tensor] = OrderedDict()
_TABLE_CACHE_SIZE = 16


@triton.jit
def _average_chunks_kernel(
    TABLE,  # [n_chunks, 4] int64: averaged address, current address, first element, numel
    WEIGHT,  # 0-d weight in the math dtype (fp32, fp64 for fp64 tensors)
    ELEM,  # any tensor of the group's dtype: only its pointer type is used, never dereferenced
    BLOCK: tl.constexpr,
    ITERS: tl.constexpr,
    ALIGNED: tl.constexpr,
):
    pid = tl.program_id(0).to(tl.int64)
    row = TABLE + pid * 4
    avg = tl.load(row).to(ELEM.dtype, bitcast=True)
    cur = tl.load(row + 1).to(ELEM.dtype, bitcast=True)
    start = tl.load(row + 2)
    numel = tl.load(row + 3)
    acc = WEIGHT.dtype.element_ty
    w = tl.load(WEIGHT)
    offs = tl.arange(0, BLOCK)
    if start + BLOCK * ITERS <= numel:
        if ALIGNED:  # chunk starts are multiples of BLOCK * ITERS elements: the alignment of the base carries over
            avg = tl.multiple_of(avg, 16)
            cur = tl.multiple_of(cur, 16)
            start = tl.multiple_of(start, BLOCK * ITERS)
        for i in range(ITERS):
            idx = start + i * BLOCK + offs
            a = tl.load(avg + idx).to(acc)
            c = tl.load(cur + idx).to(acc)
            tl.store(avg + idx, cast_rne(a + (c - a) * w, ELEM.dtype.element_ty))
    else:
        for i in range(ITERS):
            idx = start + i * BLOCK + offs
            ok = idx < numel
            a = tl.load(avg + idx, mask=ok, other=0.0).to(acc)
            c = tl.load(cur + idx, mask=ok, other=0.0).to(acc)
            tl.store(avg + idx, cast_rne(a + (c - a) * w, ELEM.dtype.element_ty), mask=ok)


def _dense(t: Tensor) -> bool:
    """Whether ``t`` covers one gap-free block of memory starting at ``data_ptr()`` (any dim order)."""
    if t.is_contiguous():
        return True
    expected = 1
    for stride, size in sorted((st, sz) for sz, st in zip(t.shape, t.stride(), strict=True) if sz != 1):
        if stride != expected:
            return False
        expected *= size
    return True


_KERNEL_DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16)  # others take the torch fallback
_COMPLEX_PARTS = {torch.complex64: torch.float32, torch.complex128: torch.float64}  # complex: real and imaginary parts


def _chunk_table(pairs: list[tuple[int, int, int]], device: torch.device) -> Tensor:
    """Device table ``[n_chunks, 4]`` int64 for ``pairs`` of ``(averaged address, current address, numel)``."""
    key = (device, CHUNK, tuple(pairs))
    table = _TABLE_CACHE.get(key)
    if table is not None:
        _TABLE_CACHE.move_to_end(key)
        return table
    if device.type == "cuda" and torch.cuda.is_current_stream_capturing():
        raise RuntimeError(
            "average_weights_triton_: the chunk table of these tensors is not cached yet, and building it needs a "
            "host-to-device copy, which CUDA graph capture forbids; call the op once on the same tensors before capture"
        )
    host = torch.tensor([(pa, pc, start, n) for pa, pc, n in pairs for start in range(0, n, CHUNK)], dtype=torch.int64)
    if device.type == "cuda":
        table = host.pin_memory().to(device, non_blocking=True)
    else:
        table = host.to(device)
    _TABLE_CACHE[key] = table
    while len(_TABLE_CACHE) > _TABLE_CACHE_SIZE:
        _TABLE_CACHE.popitem(last=False)
    return table


def _assert_inputs(averaged: list[Tensor], current: list[Tensor], weight: Tensor) -> None:
    """The kernel's preconditions (``RuntimeError``); ``compressor.ops.average_weights_`` validates arguments before."""
    where = "average_weights_triton_"
    torch._check(len(averaged) == len(current), lambda: f"{where}: {len(averaged)} averaged, {len(current)} current")
    for i, (a, c) in enumerate(zip(averaged, current, strict=True)):
        torch._check(
            a.shape == c.shape and a.dtype == c.dtype and a.device == c.device == weight.device,
            lambda i=i, a=a, c=c: f"{where}: tensor {i} differs: {tuple(a.shape)} {a.dtype} {a.device} vs "
            f"{tuple(c.shape)} {c.dtype} {c.device}, weight on {weight.device}",
        )
    torch._check(
        weight.numel() == 1 and weight.dtype.is_floating_point,
        lambda: f"{where}: weight must be a one-element floating tensor, got {tuple(weight.shape)} {weight.dtype}",
    )


@triton_op("compressor::average_weights_triton_", mutates_args={"averaged"})
def average_weights_triton_(averaged: list[Tensor], current: list[Tensor], weight: Tensor) -> None:
    """In place: ``averaged[i] += (current[i] - averaged[i]) * weight`` (floating), else ``averaged[i] = current[i]``.

    Args:
        averaged: tensors updated in place.
        current: tensors of the same shapes, dtypes and device.
        weight: 0-d float32 or float64 tensor on the same device.
    """
    _assert_inputs(averaged, current, weight)
    weight = weight.reshape(())
    groups: dict[torch.dtype, tuple[list[tuple[int, int, int]], Tensor]] = {}
    copies_avg, copies_cur = [], []
    for a, c in zip(averaged, current, strict=True):
        if not (a.dtype.is_floating_point or a.dtype.is_complex):
            copies_avg.append(a)
            copies_cur.append(c)
            continue
        if a.numel() == 0:
            continue
        flat = _COMPLEX_PARTS.get(a.dtype, a.dtype)  # the element dtype the kernel sees
        if not (flat in _KERNEL_DTYPES and _dense(a) and a.stride() == c.stride() and _dense(c)):
            # Rare (a strided view, or float8): the reference's math with torch ops, so the contract holds for every
            # layout and floating dtype.
            reference.average_weights_([a], [c], weight)
            continue
        factor = 2 if a.dtype.is_complex else 1
        entry = groups.setdefault(flat, ([], torch.view_as_real(a) if a.dtype.is_complex else a))
        entry[0].append((a.data_ptr(), c.data_ptr(), a.numel() * factor))
    for dtype, (pairs, witness) in groups.items():
        table = _chunk_table(pairs, weight.device)
        aligned = all(pa % _ALIGN == 0 and pc % _ALIGN == 0 for pa, pc, _ in pairs)
        w = weight.to(torch.float64 if dtype == torch.float64 else torch.float32)  # the math dtype
        wrap_triton(_average_chunks_kernel)[(table.shape[0],)](
            table, w, witness, BLOCK=BLOCK, ITERS=ITERS, ALIGNED=aligned, num_warps=8
        )
    if copies_avg:
        torch._foreach_copy_(copies_avg, copies_cur)


@average_weights_triton_.register_fake
def _(averaged: list[Tensor], current: list[Tensor], weight: Tensor) -> None:
    # In place with no outputs: nothing to describe. (triton_op's default fake runs the function, which needs real
    # addresses.)
    return None


# The launch reaches the tensors through addresses in a table, which functionalization cannot see: keep the op whole.
keep_opaque_under_functionalization(average_weights_triton_)
