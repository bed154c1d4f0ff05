"""The CUDA kernels (``impl="cuda"``) against the pure-PyTorch reference; skipped without a GPU.

One test runs everywhere: when a CUDA toolkit is installed, the built extension must contain the CUDA kernels.
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil

import pytest
import torch
from kd_cases import (
    MODES,
    TOLERANCES,
    check_average_float8,
    check_extreme_offsets,
    check_kd_impl,
    check_kd_mixed_dtypes,
    check_strided_weights,
    make_inputs,
    no_host_sync,
    shape_cases,
)

from compressor import ops, reference
from compressor._ext import cpp_loaded, has_kernel

HAVE_CUDA_IMPL = torch.cuda.is_available() and "cuda" in ops.available_impls("cuda")
needs_cuda = pytest.mark.skipif(not HAVE_CUDA_IMPL, reason="needs a CUDA device and the CUDA build of compressor._C")
DEVICE = "cuda"


@pytest.mark.skipif(
    not (shutil.which("nvcc") and os.path.exists("/usr/local/cuda/bin/nvcc")),
    reason="no CUDA toolkit here: the extension is built CPU-only",
)
@pytest.mark.skipif(os.environ.get("COMPRESSOR_BUILD_CUDA") == "0", reason="CPU-only build requested")
def test_extension_has_cuda_kernels_when_nvcc_present():
    """setup.py builds a CUDAExtension whenever a toolkit is found: the CUDA kernels must then be registered."""
    if not cpp_loaded():
        pytest.skip("compressor._C is not built")
    assert has_kernel("compressor::multi_teacher_kd", "CUDA")
    assert has_kernel("compressor::average_weights_", "CUDA")
    assert has_kernel("compressor::multi_teacher_kd", "CPU")
    assert has_kernel("compressor::average_weights_", "CPU")


# ---------------------------------------------------------------------------------------------------------------------
# multi_teacher_kd
# ---------------------------------------------------------------------------------------------------------------------


@needs_cuda
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("k,b,c", shape_cases())
def test_multi_teacher_kd_float32(k, b, c, mode):
    for gate_on in (False, True):
        for weights_2d in (False, True):
            for renormalize in (False, True):
                check_kd_impl("cuda", k, b, c, mode=mode, gate_on=gate_on, weights_2d=weights_2d,
                              renormalize=renormalize, temperature=0.7, device=DEVICE)


@needs_cuda
@pytest.mark.parametrize("dtype", (torch.bfloat16, torch.float16, torch.float64), ids=str)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("k,b,c", shape_cases())
def test_multi_teacher_kd_other_dtypes(k, b, c, mode, dtype):
    for i, (gate_on, renormalize) in enumerate(((False, False), (True, True), (True, False))):
        check_kd_impl("cuda", k, b, c, dtype=dtype, mode=mode, gate_on=gate_on, weights_2d=i % 2 == 0,
                      renormalize=renormalize, temperature=(0.5, 2.0, 0.9)[i], device=DEVICE)


@needs_cuda
@pytest.mark.parametrize("mode", MODES)
def test_multi_teacher_kd_bf16_large_vocab(mode):
    """C = 32768 in bf16: rows too large for the shared-memory cache, the gradient sweep re-reads them."""
    for k in (1, 4, 9):  # 9 > 8: two teacher groups
        check_kd_impl("cuda", k, 5, 32768, dtype=torch.bfloat16, mode=mode, gate_on=k > 1, weights_2d=True,
                      renormalize=True, temperature=1.0, device=DEVICE)


@needs_cuda
@pytest.mark.parametrize("mode", MODES)
def test_multi_teacher_kd_unaligned_and_odd(mode):
    """Rows whose length is not a multiple of the 16-byte pack (scalar path), C = 1, B = 1, K up to 12."""
    for k, b, c in ((1, 1, 1), (12, 2, 3), (3, 1, 4097), (6, 7, 1001), (2, 3, 8)):
        for dtype in (torch.float32, torch.bfloat16):
            check_kd_impl("cuda", k, b, c, dtype=dtype, mode=mode, gate_on=True, weights_2d=True, renormalize=True,
                          temperature=0.6, device=DEVICE)
    # a storage offset breaks 16-byte alignment although C is a multiple of the pack
    s, t, w = make_inputs(3, 4, 64, device=DEVICE, weights_2d=True)
    s_off = torch.empty(4 * 64 + 1, device=DEVICE)[1:].view(4, 64).copy_(s)
    out = torch.ops.compressor.multi_teacher_kd(s_off, t, w, 0.5, math.inf, False, False)
    ref = torch.ops.compressor.multi_teacher_kd(s, t, w, 0.5, math.inf, False, False)
    for got, want in zip(out, ref, strict=True):
        torch.testing.assert_close(got, want)


@needs_cuda
@pytest.mark.parametrize("temperature", (0.25, 0.5, 1.0, 2.0, 4.0, 3.0))
def test_multi_teacher_kd_temperatures(temperature):
    for mode in MODES:
        check_kd_impl("cuda", 5, 4, 777, mode=mode, gate_on=True, weights_2d=True, renormalize=True,
                      temperature=temperature, device=DEVICE)


@needs_cuda
def test_multi_teacher_kd_mixed_dtypes():
    """Student, teachers and weights in different dtypes: the reference's contract (compressor/reference.py)."""
    check_kd_mixed_dtypes("cuda", device=DEVICE)


@needs_cuda
def test_multi_teacher_kd_strided_weights():
    """[K] weights (row stride 0) and a transposed [K, B] view are read through their strides."""
    check_strided_weights(device=DEVICE)


@needs_cuda
@pytest.mark.parametrize("mode", MODES)
def test_multi_teacher_kd_extreme_logits(mode):
    """Offsets of +-500 and very confident teachers: no precision lost to cancellation in the online statistics."""
    check_extreme_offsets("cuda", mode, device=DEVICE)


@needs_cuda
@pytest.mark.parametrize("renormalize", (False, True))
def test_multi_teacher_kd_nothing_kept(renormalize):
    s, t, w = make_inputs(5, 3, 300, weights_2d=True, device=DEVICE)
    s.requires_grad_(True)
    loss, keep, _ = ops.multi_teacher_kd(s, t, w, temperature=2.0, gate_threshold=0.0, renormalize=renormalize,
                                         impl="cuda")
    assert not keep.any()
    assert torch.equal(loss, torch.zeros_like(loss))
    (grad,) = torch.autograd.grad(loss.sum(), s)
    assert torch.equal(grad, torch.zeros_like(grad))


@needs_cuda
def test_multi_teacher_kd_matches_cpp_and_no_host_sync():
    """Same inputs on CPU (cpp) and GPU (cuda) agree; the CUDA call never synchronises with the host."""
    s, t, w = make_inputs(4, 16, 2000, weights_2d=True)
    w_rows = w.contiguous()
    with no_host_sync(DEVICE):
        out_gpu = torch.ops.compressor.multi_teacher_kd(s.cuda(), t.cuda(), w_rows.cuda(), 0.5, 6.0, False, True)
    out_cpu = torch.ops.compressor.multi_teacher_kd(s, t, w_rows, 0.5, 6.0, False, True)
    for got, want in zip(out_gpu, out_cpu, strict=True):
        if got.dtype == torch.bool:
            assert torch.equal(got.cpu(), want)
        else:
            torch.testing.assert_close(got.cpu(), want, atol=2e-5, rtol=2e-4)


@needs_cuda
def test_multi_teacher_kd_cuda_graph_capture():
    """The forward launches asynchronously only, so it can be captured; a replay sees the inputs' new values."""
    s, t, w = make_inputs(3, 8, 500, weights_2d=True, device=DEVICE)
    op = torch.ops.compressor.multi_teacher_kd
    op(s, t, w, 0.5, 5.0, False, True)  # warm-up outside the capture
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = op(s, t, w, 0.5, 5.0, False, True)
    s.copy_(torch.randn_like(s))
    graph.replay()
    for got, want in zip(out, op(s, t, w, 0.5, 5.0, False, True), strict=True):
        torch.testing.assert_close(got, want)


@needs_cuda
def test_multi_teacher_kd_opcheck_and_compile():
    s, t, w = make_inputs(3, 5, 37, weights_2d=True, device=DEVICE)
    torch.library.opcheck(torch.ops.compressor.multi_teacher_kd.default,
                          (s.clone().requires_grad_(True), t, w, 0.8, 1.5, False, True))

    def step(student):
        loss, _, _ = ops.multi_teacher_kd(student, t, w, temperature=2.0, gate_threshold=4.0, impl="cuda")
        return loss.mean()

    s1, s2 = s.clone().requires_grad_(True), s.clone().requires_grad_(True)
    torch.compile(step, fullgraph=True)(s1).backward()
    step(s2).backward()
    torch.testing.assert_close(s1.grad, s2.grad)


# ---------------------------------------------------------------------------------------------------------------------
# average_weights_
# ---------------------------------------------------------------------------------------------------------------------

MIXED = [
    (torch.float32, (1,)),
    (torch.bfloat16, (7,)),
    (torch.float16, (100_003,)),
    (torch.int64, ()),
    (torch.float32, (33, 17)),
    (torch.float64, (4099,)),
    (torch.bool, (5,)),
    (torch.float32, (300_001,)),
    (torch.float16, (0,)),
]


def _random(dtype, shape):
    if dtype.is_floating_point:
        return torch.randn(shape, dtype=dtype, device=DEVICE)
    if dtype == torch.bool:
        return torch.rand(shape, device=DEVICE) > 0.5
    return torch.randint(-1000, 1000, shape, dtype=dtype, device=DEVICE)


def _assert_averaged(got, want):
    for g, r in zip(got, want, strict=True):
        assert g.dtype == r.dtype and g.shape == r.shape
        if g.dtype.is_floating_point:
            atol, rtol = TOLERANCES[g.dtype]
            torch.testing.assert_close(g, r, atol=atol, rtol=rtol + torch.finfo(g.dtype).eps)
        else:
            assert torch.equal(g, r)


@needs_cuda
@pytest.mark.parametrize("weight_kind", ("float", "tensor"))
def test_average_weights_mixed_list(weight_kind):
    averaged = [_random(d, s) for d, s in MIXED]
    current = [_random(d, s) for d, s in MIXED]
    expected = [a.clone() for a in averaged]
    weight = 0.3 if weight_kind == "float" else torch.tensor(0.3, device=DEVICE)
    reference.average_weights_(expected, current, weight)  # float64 tensors get a Python weight unrounded
    storages = [a.data_ptr() for a in averaged]
    with no_host_sync(DEVICE) if weight_kind == "tensor" else contextlib.nullcontext():
        ops.average_weights_(averaged, current, weight, impl="cuda")
    assert [a.data_ptr() for a in averaged] == storages
    _assert_averaged(averaged, expected)


@needs_cuda
def test_average_weights_float8():
    check_average_float8("cuda", device=DEVICE)


@needs_cuda
def test_average_weights_many_tensors_strided_and_running_mean():
    """More tensors than one launch's table, strided tensors, and the running mean of snapshots."""
    snaps = [[torch.randn(3, device=DEVICE) for _ in range(1500)] + [torch.randn(40, 30, device=DEVICE).t()]
             for _ in range(4)]
    averaged = [t.clone() for t in snaps[0]]
    for n, snap in enumerate(snaps[1:], start=1):
        ops.average_weights_(averaged, snap, torch.tensor(1.0 / (n + 1), device=DEVICE), impl="cuda")
    for i, a in enumerate(averaged):
        torch.testing.assert_close(a, torch.stack([s[i] for s in snaps]).mean(0), atol=1e-5, rtol=1e-5)


@needs_cuda
def test_average_weights_cuda_graph_capture():
    """The whole call is capturable: replaying the graph repeats the update and reads the weight's current value."""
    averaged = [torch.zeros(1000, device=DEVICE), torch.zeros(7, device=DEVICE, dtype=torch.bfloat16),
                torch.zeros((), device=DEVICE, dtype=torch.int64)]
    current = [torch.ones(1000, device=DEVICE), torch.ones(7, device=DEVICE, dtype=torch.bfloat16),
               torch.full((), 5, device=DEVICE, dtype=torch.int64)]
    weight = torch.tensor(0.5, device=DEVICE)
    ops.average_weights_(averaged, current, weight, impl="cuda")  # warm-up outside the capture
    for a in averaged:
        a.zero_()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        torch.ops.compressor.average_weights_(averaged, current, weight)
    for a in averaged:
        a.zero_()
    graph.replay()  # 0 + (1 - 0) * 0.5
    weight.fill_(0.25)
    graph.replay()  # 0.5 + (1 - 0.5) * 0.25
    torch.cuda.synchronize()
    torch.testing.assert_close(averaged[0], torch.full((1000,), 0.625, device=DEVICE))
    torch.testing.assert_close(averaged[1].float(), torch.full((7,), 0.625, device=DEVICE))
    assert int(averaged[2]) == 5
