"""pytest-benchmark: ``multi_teacher_kd`` forward+backward, providers x shapes (grouped per shape and device).

Shapes: classification (B=256, C in {8, 100, 1000}, K in {1, 3, 5, 8}, float32) on every device; the small grid
of medical tasks (K in {1, 3, 5}, C in {2, 8, 32, 100}, B in {64, 256}, float32) on the CPU; large vocabulary
(B=8192, C in {32768, 131072}, K in {1, 2, 4}, bfloat16) on CUDA only. Set ``COMPRESSOR_BENCH_QUICK=1`` for the
quick subset of every grid.
"""

from __future__ import annotations

import os

import pytest
import torch

from compressor.bench import kd_providers
from compressor.bench.kernels_table import Shape, classification_grid, large_vocab_grid, small_grid

DEVICES = ["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"]
QUICK = os.environ.get("COMPRESSOR_BENCH_QUICK", "0") == "1"


def _cases() -> list:
    cases = []
    for device in DEVICES:
        shapes = classification_grid(torch.float32, quick=QUICK)
        if device == "cpu":
            shapes += small_grid(torch.float32, quick=QUICK)
        if device == "cuda":
            shapes += large_vocab_grid(torch.bfloat16, quick=QUICK)
        for s in shapes:
            cases.append(pytest.param(device, s, id=f"{device}-K{s.k}-B{s.b}-C{s.c}-{str(s.dtype)[6:]}"))
    return cases


@pytest.mark.parametrize("provider", kd_providers.PROVIDERS)
@pytest.mark.parametrize(("device", "shape"), _cases())
def test_multi_teacher_kd(run_bench, copy_gbps, benchmark, device: str, shape: Shape, provider: str):
    available = kd_providers.available_providers(device)
    if provider not in available:
        pytest.skip(f"{provider} not available on {device} here (available: {', '.join(available)})")
    benchmark.group = f"multi_teacher_kd fwd+bwd {device} K={shape.k} B={shape.b} C={shape.c} {shape.dtype}"
    case = kd_providers.make_case(shape.k, shape.b, shape.c, dtype=shape.dtype, device=device)
    step = kd_providers.make_step(provider, case)
    step()  # compiles (torch.compile, Triton) outside the measurement
    run_bench(device)(step, moved_bytes=shape.moved_bytes, copy_gbps=copy_gbps(shape.input_bytes, device, shape.dtype))
    benchmark.extra_info.update(provider=provider, K=shape.k, B=shape.b, C=shape.c, dtype=str(shape.dtype))
