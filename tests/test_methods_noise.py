"""Noise in KD: fickle teacher, signal-dependent logit noise, random swapping, messy collaboration, soft inputs."""

from __future__ import annotations

import pytest
import torch

from compressor.methods.messy import messy_targets
from compressor.methods.soft_randomization import soft_randomize
from compressor.methods.teacher_noise import signal_dependent_noise, swap_softened_outputs
from compressor.task import Task
from compressor.training.teacher_logits import TeacherLogits
from tests.method_cases import one_thread, tiny_teacher  # noqa: F401  (fixture)


def test_fickle_teacher_outputs_differ_between_two_calls_but_batchnorm_stays_frozen():
    teacher = tiny_teacher(dropout=0.5)
    buffers = {k: v.clone() for k, v in teacher.state_dict().items()}
    x = torch.rand(6, 1, 8, 8)  # batch-norm statistics are non-trivial: neither used in batch mode nor changed
    fickle = TeacherLogits([teacher], "cpu", fickle=True)
    a, b = fickle(x), fickle(x)
    assert a.shape == (1, 6, 5) and not torch.allclose(a, b)
    for key, value in teacher.state_dict().items():  # running statistics untouched
        assert torch.equal(value, buffers[key]), key
    # averaged over many calls, the fickle outputs centre on the deterministic (dropout-off) ones
    steady = TeacherLogits([teacher], "cpu", fickle=False)
    assert torch.equal(steady(x), steady(x))
    mean = torch.stack([fickle(x) for _ in range(400)]).mean(0)
    assert torch.allclose(mean, steady(x), atol=0.25 * steady(x).abs().max().item())


def test_fickle_teacher_without_dropout_is_rejected():
    with pytest.raises(ValueError, match="dropout"):
        TeacherLogits([tiny_teacher(dropout=0.0)], "cpu", fickle=True)


def test_signal_dependent_noise_scales_with_the_logit():
    z = torch.tensor([0.0, 1.0, 10.0]).repeat(20000, 1)
    noisy = signal_dependent_noise(z, 0.2, torch.Generator().manual_seed(0))
    assert torch.all(noisy[:, 0] == 0)  # zero logits carry no signal, hence no noise
    relative = noisy[:, 1:] / z[:, 1:] - 1.0  # = d ~ N(0, 0.2^2) for every non-zero logit
    assert relative.std(0).tolist() == pytest.approx([0.2, 0.2], abs=0.01)
    assert relative.mean(0).abs().max() < 0.01
    assert signal_dependent_noise(z, 0.0, torch.Generator()) is z


def test_swap_top2_exchanges_only_near_ties():
    gen = torch.Generator().manual_seed(0)
    near = torch.tensor([[2.0, 2.1, -1.0]])  # softened top-2 probabilities nearly equal at tau = 4
    far = torch.tensor([[9.0, 0.0, -1.0]])
    swapped = swap_softened_outputs(near, "top2", 1.0, 0.2, 4.0, gen)
    assert torch.equal(swapped, torch.tensor([[2.1, 2.0, -1.0]]))
    assert torch.equal(swap_softened_outputs(far, "top2", 1.0, 0.2, 4.0, gen), far)
    # with probability p, about a share p of eligible rows are swapped
    rows = near.repeat(4000, 1)
    changed = (swap_softened_outputs(rows, "top2", 0.3, 0.2, 4.0, gen) != rows).any(1).float().mean()
    assert float(changed) == pytest.approx(0.3, abs=0.03)


def test_swap_all_exchanges_consecutive_ranked_pairs():
    gen = torch.Generator().manual_seed(0)
    z = torch.tensor([[0.0, 5.0, 0.1, 4.9, -3.0]])  # ranks: 5.0, 4.9 | 0.1, 0.0 | -3.0
    out = swap_softened_outputs(z, "all", 1.0, 0.5, 1.0, gen)
    assert torch.equal(out, torch.tensor([[0.1, 4.9, 0.0, 5.0, -3.0]]))
    k_b_c = torch.randn(3, 7, 10)
    out = swap_softened_outputs(k_b_c, "all", 0.5, 1.0, 2.0, gen)
    assert torch.equal(out.sort(-1).values, k_b_c.sort(-1).values)  # a permutation per row
    assert not torch.equal(out, k_b_c)


def test_messy_collaboration_corrupts_targets_at_rate_r():
    gen = torch.Generator().manual_seed(0)
    y = torch.randint(0, 10, (20000,))
    out, changed = messy_targets(y, 10, 0.3, Task.MULTICLASS, gen)
    assert float(changed.float().mean()) == pytest.approx(0.3, abs=0.01)
    assert torch.equal(changed, out != y)  # a corrupted target is never the given label
    counts = torch.bincount((out - y)[changed] % 10, minlength=10)[1:].float()
    assert counts.min() / counts.max() > 0.85  # uniform over the 9 wrong classes
    again, _ = messy_targets(y, 10, 0.3, Task.MULTICLASS, gen)
    assert not torch.equal(again, out)  # drawn anew for every batch


def test_messy_collaboration_multilabel_flips_entries():
    y = (torch.rand(5000, 6, generator=torch.Generator().manual_seed(1)) < 0.3).float()
    out, changed = messy_targets(y, 6, 0.2, Task.MULTILABEL, torch.Generator().manual_seed(2))
    assert float((out != y).float().mean()) == pytest.approx(0.2, abs=0.01)
    assert set(out.unique().tolist()) <= {0.0, 1.0} and torch.equal(changed, (out != y).any(1))


def test_soft_randomization_adds_gaussian_noise_of_sigma():
    x = torch.full((200, 1, 8, 8), 0.5)
    noisy = soft_randomize(x, 0.05, torch.Generator().manual_seed(0))
    assert float((noisy - x).std()) == pytest.approx(0.05, rel=0.03)
    assert abs(float((noisy - x).mean())) < 0.002
