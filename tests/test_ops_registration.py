"""Registration of the C++ ops (schemas, fake kernels, autograd), torch.compile, the dispatch and argument checks in
compressor.ops, the dtype contract, and the ops' dependencies."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from kd_cases import check_kd_mixed_dtypes, gate_for, make_inputs

from compressor import ops, reference

HAVE_CPP = "cpp" in ops.available_impls("cpu")
needs_cpp = pytest.mark.skipif(not HAVE_CPP, reason="compressor._C is not built")


# ---------------------------------------------------------------------------------------------------------------------
# opcheck: schema, fake (meta) kernel vs real kernel, autograd registration, AOT dispatch with dynamic shapes
# ---------------------------------------------------------------------------------------------------------------------


@needs_cpp
@pytest.mark.parametrize(
    "k,b,c,dtype,multilabel,renormalize,gate",
    [
        (3, 5, 37, torch.float32, False, True, True),
        (2, 4, 64, torch.bfloat16, False, False, False),
        (4, 3, 20, torch.float32, True, True, True),
        (1, 2, 9, torch.float16, True, False, False),
        (2, 3, 5, torch.float64, False, True, True),
    ],
)
def test_opcheck_multi_teacher_kd(k, b, c, dtype, multilabel, renormalize, gate):
    s, t, w = make_inputs(k, b, c, dtype=dtype, weights_2d=True)
    mode = "multilabel" if multilabel else "multiclass"
    chi = gate_for(reference.multi_teacher_kd(s, t, w, temperature=0.8, mode=mode)[2], gate)
    torch.library.opcheck(
        torch.ops.compressor.multi_teacher_kd.default,
        (s.clone().requires_grad_(True), t, w, 0.8, chi, multilabel, renormalize),
    )


@needs_cpp
def test_opcheck_average_weights():
    averaged = [torch.randn(3, 4), torch.randn(5).bfloat16(), torch.arange(4), torch.randn(2, dtype=torch.float64)]
    current = [torch.randn(3, 4), torch.randn(5).bfloat16(), torch.arange(4) + 3, torch.randn(2, dtype=torch.float64)]
    torch.library.opcheck(torch.ops.compressor.average_weights_.default, (averaged, current, torch.tensor(0.25)))


@needs_cpp
def test_fake_kernel_shapes_and_dtypes():
    """The fake kernel's outputs under FakeTensorMode match the real kernel's metadata exactly."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    for dtype in (torch.float32, torch.bfloat16, torch.float64):
        s, t, w = make_inputs(3, 4, 10, dtype=dtype, weights_2d=True)
        real = torch.ops.compressor.multi_teacher_kd(s, t, w, 1.0, math.inf, False, False)
        with FakeTensorMode() as mode:
            fake = torch.ops.compressor.multi_teacher_kd(
                mode.from_tensor(s), mode.from_tensor(t), mode.from_tensor(w), 1.0, math.inf, False, False
            )
        for r, f in zip(real, fake, strict=True):
            assert (r.shape, r.dtype, r.stride()) == (f.shape, f.dtype, f.stride())


@needs_cpp
def test_autograd_outputs():
    """Only the loss is differentiable; the backward scales the saved row gradient by the upstream gradient."""
    s, t, w = make_inputs(2, 3, 8, weights_2d=True)
    s.requires_grad_(True)
    loss, keep, entropy, raw = torch.ops.compressor.multi_teacher_kd(s, t, w, 0.5, math.inf, False, False)
    assert loss.requires_grad and not keep.requires_grad and not entropy.requires_grad and not raw.requires_grad
    upstream = torch.tensor([1.0, -2.0, 0.5])
    (grad,) = torch.autograd.grad(loss, s, upstream)
    torch.testing.assert_close(grad, upstream[:, None] * raw)
    # teachers and weights never receive a gradient
    t.requires_grad_(True)
    w.requires_grad_(True)
    loss, *_ = torch.ops.compressor.multi_teacher_kd(s, t, w, 0.5, math.inf, False, False)
    grads = torch.autograd.grad(loss.sum(), (s, t, w), allow_unused=True)
    assert grads[0] is not None and grads[1] is None and grads[2] is None


# ---------------------------------------------------------------------------------------------------------------------
# torch.compile
# ---------------------------------------------------------------------------------------------------------------------


@needs_cpp
def test_compile_fullgraph_matches_eager():
    """compressor.ops.multi_teacher_kd(impl="cpp") inside torch.compile(fullgraph=True), forward and backward."""
    k, b, c = 4, 6, 200
    s, t, w = make_inputs(k, b, c, weights_2d=True)

    def step(student, teachers, weights):
        loss, keep, entropy = ops.multi_teacher_kd(
            student, teachers, weights, temperature=2.0, gate_threshold=4.5, renormalize=True, impl="cpp"
        )
        return 0.9 * loss.mean() + 0.1 * student.logsumexp(-1).mean(), keep, entropy

    torch._dynamo.reset()
    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")
    s1, s2 = s.clone().requires_grad_(True), s.clone().requires_grad_(True)
    loss, keep, entropy = compiled(s1, t, w)
    loss.backward()
    loss_ref, keep_ref, entropy_ref = step(s2, t, w)
    loss_ref.backward()
    torch.testing.assert_close(loss, loss_ref)
    torch.testing.assert_close(entropy, entropy_ref)
    assert torch.equal(keep, keep_ref)
    torch.testing.assert_close(s1.grad, s2.grad)


# ---------------------------------------------------------------------------------------------------------------------
# Dispatch: impl= / $COMPRESSOR_IMPL / auto
# ---------------------------------------------------------------------------------------------------------------------


def test_unknown_impl_lists_available(monkeypatch):
    monkeypatch.delenv(ops.ENV_VAR, raising=False)
    s, t, w = make_inputs(2, 3, 5)
    with pytest.raises(ValueError, match="nonsense") as info:
        ops.multi_teacher_kd(s, t, w, temperature=1.0, impl="nonsense")
    for name in ("auto", "reference", "cpp"):
        assert name in str(info.value)
    with pytest.raises(ValueError, match="nonsense"):
        ops.average_weights_([torch.zeros(2)], [torch.ones(2)], 0.5, impl="nonsense")


def test_env_var_is_respected(monkeypatch):
    calls = []
    real = reference.multi_teacher_kd

    def spy(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(reference, "multi_teacher_kd", spy)
    s, t, w = make_inputs(2, 3, 5)
    monkeypatch.setenv(ops.ENV_VAR, "reference")
    assert ops.resolve_impl(None, "cpu") == "reference"
    ops.multi_teacher_kd(s, t, w, temperature=1.0)
    assert len(calls) == 1
    if HAVE_CPP:
        monkeypatch.setenv(ops.ENV_VAR, "cpp")
        assert ops.resolve_impl(None, "cpu") == "cpp"
        ops.multi_teacher_kd(s, t, w, temperature=1.0)
        assert len(calls) == 1  # the C++ kernel ran, not the reference
    monkeypatch.setenv(ops.ENV_VAR, "bogus")
    with pytest.raises(ValueError, match="bogus"):
        ops.multi_teacher_kd(s, t, w, temperature=1.0)
    # an explicit impl= wins over the environment
    ops.multi_teacher_kd(s, t, w, temperature=1.0, impl="reference")
    assert len(calls) == 2


def test_cuda_impl_on_cpu_tensors_raises(monkeypatch):
    monkeypatch.delenv(ops.ENV_VAR, raising=False)
    s, t, w = make_inputs(2, 3, 5)
    with pytest.raises(ValueError, match="'cuda'.*not available for cpu tensors") as info:
        ops.multi_teacher_kd(s, t, w, temperature=1.0, impl="cuda")
    assert "available: auto, reference" in str(info.value)
    with pytest.raises(ValueError, match="not available"):
        ops.average_weights_([torch.zeros(2)], [torch.ones(2)], 0.5, impl="cuda")


@needs_cpp
def test_auto_picks_cpp_on_cpu(monkeypatch):
    monkeypatch.delenv(ops.ENV_VAR, raising=False)
    assert ops.resolve_impl(None, "cpu") == "cpp"
    assert ops.resolve_impl("auto", torch.device("cpu")) == "cpp"
    assert "cpp" in ops.available_impls("cpu")
    assert ops.AUTO_ORDER["cpu"][0] == "cpp"


# ---------------------------------------------------------------------------------------------------------------------
# Bad arguments are rejected in Python, before any kernel runs
# ---------------------------------------------------------------------------------------------------------------------


@pytest.fixture
def no_kernel(monkeypatch):
    """Replace the C++ op so that reaching it fails the test (the error must come from the argument checks)."""
    monkeypatch.delenv(ops.ENV_VAR, raising=False)

    def forbidden(*args, **kwargs):
        raise AssertionError("a kernel ran on bad arguments")

    if HAVE_CPP:
        monkeypatch.setattr(torch.ops.compressor, "multi_teacher_kd", forbidden)
        monkeypatch.setattr(torch.ops.compressor, "average_weights_", forbidden)
    monkeypatch.setattr(reference, "multi_teacher_kd", forbidden)


@pytest.mark.parametrize("impl", ("cpp", "reference"))
def test_bad_arguments_raise_before_kernels(impl, no_kernel):
    if impl == "cpp" and not HAVE_CPP:
        pytest.skip("compressor._C is not built")
    s, t, w = make_inputs(3, 4, 6)
    cases = [
        ((s, t[:, :3], w), dict(temperature=1.0), ValueError, "do not match"),  # B mismatch
        ((s[:, :5], t, w), dict(temperature=1.0), ValueError, "do not match"),  # C mismatch
        ((s, t, w[:2]), dict(temperature=1.0), ValueError, "entries"),  # weights vs K
        ((s, t, torch.ones(3, 5)), dict(temperature=1.0), ValueError, r"\[K, B\]"),
        ((s, t[:0], w[:0]), dict(temperature=1.0), ValueError, "K = 0"),
        ((s, t, w), dict(temperature=0.0), ValueError, "temperature"),
        ((s, t, w), dict(temperature=-1.0), ValueError, "temperature"),
        ((s, t, w), dict(temperature=math.inf), ValueError, "temperature"),
        ((s, t, w), dict(temperature=1.0, mode="softmax"), ValueError, "mode"),
        ((s.long(), t, w), dict(temperature=1.0), TypeError, "floating point"),
        ((s, t.int(), w), dict(temperature=1.0), TypeError, "floating point"),
        ((s[0], t, w), dict(temperature=1.0), ValueError, r"\[B, C\]"),
        ((s, t.to("meta"), w), dict(temperature=1.0), ValueError, "one device"),
        ((s, t, w.to("meta")), dict(temperature=1.0), ValueError, "one device"),
        ((s, t, w.long()), dict(temperature=1.0), TypeError, "weights must be floating"),
        ((s, t, w[:, None, None]), dict(temperature=1.0), ValueError, r"\[K\] or \[K, B\]"),
        ((s, t, w.tolist()), dict(temperature=1.0), TypeError, "weights must be a tensor"),
        ((s, t, w), dict(temperature=torch.tensor(1.0)), TypeError, "temperature must be a real number"),
        ((s, t, w), dict(temperature=True), TypeError, "temperature must be a real number"),
        ((s, t, w), dict(temperature=1.0, gate_threshold="4"), TypeError, "gate_threshold must be a real number"),
        ((s, t, w), dict(temperature=1.0, gate_threshold=math.nan), ValueError, "gate_threshold must not be NaN"),
        ((s.to(torch.float8_e4m3fn), t, w), dict(temperature=1.0), TypeError, "floating point"),
    ]
    for args, kwargs, error, match in cases:
        with pytest.raises(error, match=match):
            ops.multi_teacher_kd(*args, impl=impl, **kwargs)


def test_bad_average_arguments_raise_before_kernels(no_kernel):
    impl = "cpp" if HAVE_CPP else "reference"
    a = [torch.zeros(3), torch.zeros(2)]
    with pytest.raises(ValueError, match="averaged tensors"):
        ops.average_weights_(a, a[:1], 0.5, impl=impl)
    with pytest.raises(ValueError, match="shape"):
        ops.average_weights_(a, [torch.zeros(3), torch.zeros(4)], 0.5, impl=impl)
    with pytest.raises(TypeError, match="dtype"):
        ops.average_weights_(a, [torch.zeros(3), torch.zeros(2, dtype=torch.float64)], 0.5, impl=impl)
    with pytest.raises(ValueError, match="one device"):
        ops.average_weights_(a, [torch.zeros(3), torch.zeros(2, device="meta")], 0.5, impl=impl)
    with pytest.raises(TypeError, match="one floating element"):
        ops.average_weights_(a, [torch.zeros(3), torch.zeros(2)], torch.tensor([0.5, 0.5]), impl=impl)
    with pytest.raises(ValueError, match="finite"):
        ops.average_weights_(a, [torch.zeros(3), torch.zeros(2)], math.nan, impl=impl)
    with pytest.raises(TypeError, match="real number"):
        ops.average_weights_(a, [torch.zeros(3), torch.zeros(2)], "0.5", impl=impl)
    with pytest.raises(TypeError, match="not two tensors"):
        ops.average_weights_(a, [torch.zeros(3), [0.0, 0.0]], 0.5, impl=impl)


# ---------------------------------------------------------------------------------------------------------------------
# The dtype contract and the ops' dependencies
# ---------------------------------------------------------------------------------------------------------------------


def test_reference_reads_each_input_in_its_own_dtype():
    """Mixed dtypes mean: every input read exactly, all arithmetic in the student's accumulation dtype."""
    s, t, w = make_inputs(3, 5, 40, weights_2d=True)
    for s_dtype, t_dtype, w_dtype in ((torch.float32, torch.bfloat16, torch.float16),
                                      (torch.bfloat16, torch.float16, torch.float64),
                                      (torch.float64, torch.float16, torch.float32)):
        acc = reference.accumulation_dtype(s_dtype)
        s1, s2 = s.to(s_dtype).requires_grad_(True), s.to(s_dtype).to(acc).requires_grad_(True)
        kwargs = dict(temperature=0.7, gate_threshold=2.5, renormalize=True)
        mixed = ops.multi_teacher_kd(s1, t.to(t_dtype), w.to(w_dtype), impl="reference", **kwargs)
        upcast = reference.multi_teacher_kd(s2, t.to(t_dtype).to(acc), w.to(w_dtype).to(acc), **kwargs)
        for got, want in zip(mixed, upcast, strict=True):
            assert got.dtype == want.dtype and torch.equal(got, want)
        (grad,) = torch.autograd.grad(mixed[0].sum(), s1)
        (grad_acc,) = torch.autograd.grad(upcast[0].sum(), s2)
        assert grad.dtype == s_dtype and torch.equal(grad, grad_acc.to(s_dtype))


def test_mixed_dtypes_through_the_reference_impl():
    check_kd_mixed_dtypes("reference")


def test_ops_import_without_the_spec_stack():
    """compressor.ops, compressor.kernels and the bench CLI import with pydantic and yaml unavailable (the GPU
    machine has neither), and the ops run there."""
    code = textwrap.dedent("""
        import importlib.abc, sys

        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("pydantic", "yaml"):
                    raise ImportError(f"{name} is blocked")

        sys.meta_path.insert(0, Block())
        import torch
        from compressor import ops
        import compressor.kernels
        import compressor.bench.cli
        s, t = torch.randn(4, 6, requires_grad=True), torch.randn(2, 4, 6)
        for impl in ops.available_impls("cpu"):
            loss, _, _ = ops.multi_teacher_kd(s, t, torch.ones(2), temperature=2.0, impl=impl)
            loss.sum().backward()
        print("ok", sorted(m for m in sys.modules if m.split(".")[0] in ("pydantic", "yaml")))
    """)
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "ok []"
