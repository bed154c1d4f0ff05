"""pytest-benchmark: ``average_weights_`` (ours, per implementation) vs ``torch._foreach_lerp_`` vs a per-tensor loop.

Cases: ResNet-18's parameters and buffers, and a list of many small float32 tensors of
``COMPRESSOR_BENCH_PARAMS`` elements (default 100M). On CUDA, ours must also pass one call
under ``torch.cuda.set_sync_debug_mode("error")`` with a device-tensor weight (no host synchronisation).
"""

from __future__ import annotations

import os

import pytest
import torch

from compressor import ops
from compressor.bench import averaging

DEVICES = ["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"]
_STATES: dict[tuple[str, str], list[torch.Tensor]] = {}


def _state(case: str, device: str) -> list[torch.Tensor]:
    """The tensor list of ``case`` on ``device`` (built once per session)."""
    if (case, device) not in _STATES:
        _STATES.clear()  # one case in memory at a time
        if case == "resnet18":
            _STATES[case, device] = averaging.resnet18_state(device)
        else:
            params = int(float(os.environ.get("COMPRESSOR_BENCH_PARAMS", averaging.DEFAULT_PARAMS)))
            _STATES[case, device] = averaging.many_small_state(params, device)
    return _STATES[case, device]


@pytest.mark.parametrize("provider", averaging.PROVIDERS)
@pytest.mark.parametrize("case", ["resnet18", "many-small"])
@pytest.mark.parametrize("device", DEVICES)
def test_average_weights(run_bench, copy_gbps, benchmark, device: str, case: str, provider: str):
    available = averaging.available_providers(device)
    if provider not in available:
        pytest.skip(f"{provider} not available on {device} here (available: {', '.join(available)})")
    state = _state(case, device)
    params = sum(t.numel() for t in state if t.is_floating_point())
    benchmark.group = f"average_weights_ {device} {case} ({params / 1e6:.1f}M elements, {len(state)} tensors)"
    averaged, current = averaging.make_pair(state)
    step = averaging.make_step(provider, averaged, current)
    if device == "cuda" and provider in ops.IMPLS:
        weight = torch.tensor(averaging.WEIGHT, device=device)
        assert averaging.sync_free(provider, averaged, current, weight) == "yes"
    float_bytes = sum(t.numel() * t.element_size() for t in state if t.is_floating_point())
    int_bytes = sum(t.numel() * t.element_size() for t in state if not t.is_floating_point())
    run_bench(device)(step, moved_bytes=3 * float_bytes + 2 * int_bytes, copy_gbps=copy_gbps(float_bytes, device))
    benchmark.extra_info.update(provider=provider, case=case, params=params, tensors=len(state))
