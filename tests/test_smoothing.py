"""Randomized smoothing: Clopper-Pearson bound, radii against closed forms, abstention on a coin-flip model."""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np
import pytest
import torch
from scipy.stats import binom
from torch import nn

from compressor.robustness.smoothing import (
    ABSTAIN,
    certified_accuracy,
    certify,
    clopper_pearson_lower,
    decision_codes,
    label_codes,
    noisy_decisions,
    predict,
)
from compressor.task import Task


class Constant(nn.Module):
    """Always answers ``label``, whatever the input."""

    def __init__(self, label: int, classes: int = 4):
        super().__init__()
        self.label, self.classes = label, classes

    def forward(self, x):
        logits = torch.zeros(len(x), self.classes)
        logits[:, self.label] = 1.0
        return logits


class CoinFlip(nn.Module):
    """Answers class 0 or 1 with probability 1/2 each, independently of the input."""

    def forward(self, x):
        heads = torch.rand(len(x)) < 0.5
        return torch.stack([heads.float(), (~heads).float(), torch.zeros(len(x))], dim=1)


class Threshold(nn.Module):
    """Class 1 when the first pixel exceeds 0.5, else class 0: a linear classifier whose L2 distance to the
    decision boundary is ``|x_0 - 0.5|``, the radius smoothing certifies as n grows (Cohen et al., Prop. 4)."""

    def forward(self, x):
        z = x.flatten(1)[:, 0] - 0.5
        return torch.stack([-z, z], dim=1)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_clopper_pearson_lower_bound_inverts_the_binomial_tail():
    n, alpha = 500, 0.01
    for k in (1, 37, 250, 499):
        p = float(clopper_pearson_lower(k, n, alpha))
        assert binom.sf(k - 1, n, p) == pytest.approx(alpha, rel=1e-6)  # P(Bin(n, p) >= k) = alpha
    assert float(clopper_pearson_lower(0, n, alpha)) == 0.0
    assert float(clopper_pearson_lower(n, n, alpha)) == pytest.approx(alpha ** (1 / n), rel=1e-12)


@pytest.mark.parametrize(("sigma", "n", "alpha"), [(0.25, 1000, 0.001), (0.5, 400, 0.01)])
def test_constant_classifier_certifies_with_the_closed_form_radius(sigma, n, alpha):
    x = torch.rand(5, 1, 4, 4, generator=gen())
    result = certify(Constant(2), x, sigma=sigma, n0=20, n=n, alpha=alpha, task=Task.MULTICLASS, batch_size=333,
                     generator=gen())
    p_lower = alpha ** (1 / n)  # every one of the n draws votes for class 2
    expected = sigma * NormalDist().inv_cdf(p_lower)
    assert result.prediction.tolist() == [2] * 5
    assert result.count.tolist() == [n] * 5
    np.testing.assert_allclose(result.p_lower, p_lower, rtol=1e-12)
    np.testing.assert_allclose(result.radius, expected, rtol=1e-9)


def test_coin_flip_model_abstains():
    torch.manual_seed(0)
    x = torch.rand(20, 1, 4, 4, generator=gen())
    result = certify(CoinFlip(), x, sigma=0.25, n0=50, n=1000, alpha=0.001, task=Task.MULTICLASS, batch_size=4096,
                     generator=gen())
    assert (result.prediction == ABSTAIN).all() and np.isnan(result.radius).all()
    assert (result.p_lower < 0.5).all()
    predicted = predict(CoinFlip(), x, sigma=0.25, n=1000, alpha=0.001, task=Task.MULTICLASS, batch_size=4096,
                        generator=gen())
    assert (predicted == ABSTAIN).all()


def test_linear_classifier_radius_approaches_the_distance_to_its_boundary():
    distance = torch.tensor([0.05, 0.15, 0.3])
    x = torch.zeros(3, 1, 2, 2)
    x[:, 0, 0, 0] = 0.5 + distance
    sigma = 0.25
    result = certify(Threshold(), x, sigma=sigma, n0=100, n=20000, alpha=0.001, task=Task.MULTICLASS, batch_size=8192,
                     generator=gen())
    assert result.prediction.tolist() == [1, 1, 1]
    assert (result.radius <= distance.numpy()).all()  # sound: never more than the true distance
    assert (result.radius > distance.numpy() - 0.06 * sigma / 0.25).all()  # and close to it
    assert predict(Threshold(), x, sigma=sigma, n=2000, alpha=0.001, task=Task.MULTICLASS, batch_size=8192,
                   generator=gen()).tolist() == [1, 1, 1]


def test_noise_is_batched_across_samples_and_reproducible():
    x = torch.rand(7, 1, 3, 3, generator=gen())
    a = noisy_decisions(Threshold(), x, 50, 0.3, Task.MULTICLASS, batch_size=64, generator=gen(3))
    b = noisy_decisions(Threshold(), x, 50, 0.3, Task.MULTICLASS, batch_size=1000, generator=gen(3))
    assert a.shape == (7, 50) and torch.equal(a, b)  # batch boundaries do not change the draws


def test_certified_accuracy_counts_correct_certified_samples():
    prediction = np.array([1, 2, ABSTAIN, 0, 3])
    radius = np.array([0.5, 0.1, np.nan, 0.3, 0.0])
    truth = np.array([1, 2, 2, 1, 3])
    assert certified_accuracy(prediction, radius, truth, [0.0, 0.2, 0.5, 0.6]) == [0.6, 0.2, 0.2, 0.0]


def test_multilabel_decisions_are_label_set_codes():
    logits = torch.tensor([[1.0, -1.0, 2.0], [-1.0, -1.0, -1.0]])
    labels = np.array([[1, 0, 1], [0, 0, 0]])
    assert decision_codes(logits, Task.MULTILABEL).tolist() == label_codes(labels, Task.MULTILABEL).tolist() == [5, 0]
    p = math.exp(math.log(0.001) / 300)
    result = certify(Constant(1, classes=3), torch.rand(2, 1, 2, 2), sigma=0.1, n0=10, n=300, alpha=0.001,
                     task=Task.MULTILABEL, batch_size=128, generator=gen())
    assert result.prediction.tolist() == [2, 2]  # only label 1 is positive: code 0b010
    np.testing.assert_allclose(result.p_lower, p, rtol=1e-12)
