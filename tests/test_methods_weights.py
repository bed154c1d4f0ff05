"""Teacher weights: per-sample exponential draws and Baseline IV's adaptive (label-confidence) weights."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from compressor.methods.adaptive import adaptive_weights, log_label_confidence
from compressor.methods.weighting import batch_teacher_weights
from compressor.spec import parse_spec
from compressor.task import Task


def test_per_sample_exponential_weights_vary_by_sample_raw_or_normalised():
    def exponential_sample_weights(k, b, generator, scale="normalised"):
        spec = parse_spec({"distillation": {"weight_draw": "sample", "weight_scale": scale}}).distillation
        return batch_teacher_weights(spec, torch.zeros(k, b, 2), torch.zeros(b), Task.MULTICLASS, generator)

    w = exponential_sample_weights(3, 2000, torch.Generator().manual_seed(0))
    assert w.shape == (3, 2000) and torch.allclose(w.sum(0), torch.ones(2000))
    assert w.std(1).min() > 0.2  # differ between samples of one batch
    assert torch.allclose(w.mean(1), torch.full((3,), 1 / 3), atol=0.02)  # Dirichlet(1, 1, 1) mean
    raw = exponential_sample_weights(3, 4000, torch.Generator().manual_seed(1), "raw")
    assert raw.shape == (3, 4000) and raw.sum(0).std() > 0.5  # Exp(1) draws as they are: mean 1, std 1 each
    assert torch.allclose(raw.mean(1), torch.ones(3), atol=0.06) and torch.allclose(raw.std(1), torch.ones(3), atol=0.1)


def test_adaptive_weights_follow_confidence_in_the_given_label():
    t = torch.tensor([[[4.0, 0.0, 0.0], [0.0, 0.0, 0.0]],
                      [[0.0, 4.0, 0.0], [0.0, 0.0, 3.0]]])  # [K=2, B=2, C=3]
    y = torch.tensor([0, 2])
    conf = F.softmax(t, -1)[:, torch.arange(2), y]  # [K, B]
    w = adaptive_weights(t, y, Task.MULTICLASS)
    assert torch.allclose(w, conf / conf.sum(0, keepdim=True), atol=1e-6)  # T = 1: proportional
    assert w[0, 0] > 0.95 and w[1, 1] > 0.7  # the teacher that agrees with the label dominates
    assert torch.allclose(adaptive_weights(t, y, Task.MULTICLASS, 1e4), torch.full((2, 2), 0.5), atol=1e-3)
    sharp = adaptive_weights(t, y, Task.MULTICLASS, 1e-3)
    assert sharp[0, 0] == 1.0 and sharp[1, 1] == 1.0


def test_adaptive_multilabel_confidence_is_mean_bernoulli_likelihood():
    t = torch.tensor([[[3.0, -3.0]], [[-3.0, 3.0]]])  # [K=2, B=1, L=2]
    y = torch.tensor([[1.0, 0.0]])
    s = torch.sigmoid(torch.tensor(3.0))
    expected = torch.log(torch.tensor([[s], [1 - s]]))
    assert torch.allclose(log_label_confidence(t, y, Task.MULTILABEL), expected, atol=1e-6)


def test_batch_weights_dispatch_on_the_spec():
    t = torch.randn(3, 5, 4)
    y = torch.randint(0, 4, (5,))
    gen = torch.Generator().manual_seed(0)
    spec = lambda **d: parse_spec({"distillation": d}).distillation  # noqa: E731
    assert batch_teacher_weights(spec(weighting="equal"), t, y, Task.MULTICLASS, gen).shape == (3,)
    assert batch_teacher_weights(spec(weight_draw="sample"), t, y, Task.MULTICLASS, gen).shape == (3, 5)
    # weights normalised to sum to one by default; weight_scale: raw keeps the paper's Exp(1) draws as they are
    same = lambda **d: batch_teacher_weights(spec(**d), t, y, Task.MULTICLASS, torch.Generator().manual_seed(3))  # noqa: E731
    raw, normalised = same(weight_scale="raw"), same()
    assert not torch.isclose(raw.sum(), torch.tensor(1.0)) and torch.allclose(normalised, raw / raw.sum())
    raw, normalised = same(weight_draw="sample", weight_scale="raw"), same(weight_draw="sample")
    assert torch.allclose(normalised, raw / raw.sum(0, keepdim=True))
    assert torch.allclose(batch_teacher_weights(spec(weighting="adaptive"), t, y, Task.MULTICLASS, gen),
                          adaptive_weights(t, y, Task.MULTICLASS))
