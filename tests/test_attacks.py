"""FGSM and PGD: perturbations stay in the eps ball and in [0, 1], lower the accuracy of an undefended model,
and PGD is at least as strong as FGSM at equal eps."""

from __future__ import annotations

import pytest
import torch
from sklearn.datasets import load_digits
from torch import nn

from compressor.robustness.attacks import fgsm, pgd, project, random_start
from compressor.task import Task


@pytest.fixture(scope="module")
def digits_model():
    """A softmax regression on 8x8 digits in [0, 1], trained for a moment: accurate and undefended."""
    digits = load_digits()
    x = torch.tensor(digits.images / 16.0, dtype=torch.float32).unsqueeze(1)
    y = torch.tensor(digits.target, dtype=torch.int64)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    train, test = slice(0, 1400), slice(1400, None)
    for _ in range(150):
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x[train]), y[train]).backward()
        optimizer.step()
    model.eval()
    return model, x[test], y[test]


def accuracy(model, x, y) -> float:
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


def distances(adv, x, norm):
    diff = (adv - x).flatten(1)
    return diff.abs().amax(1) if norm == "linf" else diff.norm(dim=1)


ATTACKS = {
    "fgsm": lambda m, x, y, eps, norm: fgsm(m, x, y, eps, norm=norm),
    "pgd": lambda m, x, y, eps, norm: pgd(m, x, y, eps, norm=norm, steps=7, restarts=2,
                                          generator=torch.Generator().manual_seed(1)),
}


@pytest.mark.parametrize("method", ["fgsm", "pgd"])
@pytest.mark.parametrize(("norm", "eps"), [("linf", 2 / 255), ("linf", 0.1), ("l2", 0.3), ("l2", 1.5)])
def test_attack_stays_in_eps_ball_and_unit_box(digits_model, method, norm, eps):
    model, x, y = digits_model
    adv = ATTACKS[method](model, x, y, eps, norm)
    assert adv.shape == x.shape
    assert float(adv.min()) >= 0.0 and float(adv.max()) <= 1.0
    assert float(distances(adv, x, norm).max()) <= eps * (1 + 1e-5)
    assert float(distances(adv, x, norm).max()) > 0.5 * eps  # it does move


@pytest.mark.parametrize("method", ["fgsm", "pgd"])
@pytest.mark.parametrize(("norm", "eps"), [("linf", 0.1), ("l2", 1.0)])
def test_attack_lowers_accuracy_of_undefended_model(digits_model, method, norm, eps):
    model, x, y = digits_model
    clean = accuracy(model, x, y)
    assert clean > 0.85
    attacked = accuracy(model, ATTACKS[method](model, x, y, eps, norm), y)
    assert attacked < clean - 0.2


@pytest.mark.parametrize(("norm", "eps"), [("linf", 0.02), ("linf", 0.06), ("l2", 0.5), ("l2", 1.0)])
def test_pgd_at_least_as_strong_as_fgsm(digits_model, norm, eps):
    model, x, y = digits_model
    with torch.no_grad():
        fooled_fgsm = model(fgsm(model, x, y, eps, norm=norm)).argmax(1) != y
        pgd_adv = pgd(model, x, y, eps, norm=norm, steps=10, generator=torch.Generator().manual_seed(0))
        fooled_pgd = model(pgd_adv).argmax(1) != y
        plain_pgd = pgd(model, x, y, eps, norm=norm, steps=10, include_fgsm=False,
                        generator=torch.Generator().manual_seed(0))
        fooled_plain = model(plain_pgd).argmax(1) != y
    assert bool((fooled_pgd | ~fooled_fgsm).all())  # every sample FGSM fools, PGD fools too
    assert fooled_pgd.float().mean() >= fooled_fgsm.float().mean()
    assert fooled_plain.float().mean() >= fooled_fgsm.float().mean()  # the iterations alone already suffice here


def test_multilabel_model_attacked_through_per_class_loss():
    torch.manual_seed(0)
    x = torch.rand(64, 1, 6, 6)
    model = nn.Sequential(nn.Flatten(), nn.Linear(36, 4)).eval()
    with torch.no_grad():
        labels = (model(x) > 0).float()  # the model is right on every label by construction
    adv = pgd(model, x, labels, 0.2, norm="linf", task=Task.MULTILABEL, steps=10,
              generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        exact = ((model(adv) > 0).float() == labels).all(1).float().mean()
    assert float((adv - x).abs().max()) <= 0.2 + 1e-6 and 0 <= float(adv.min()) and float(adv.max()) <= 1
    assert float(exact) < 0.5


def test_projection_and_random_start_land_in_the_ball():
    g = torch.Generator().manual_seed(0)
    delta = torch.randn(50, 3, 5, 5, generator=g) * 3
    for norm, eps in (("linf", 0.1), ("l2", 0.7)):
        projected = project(delta, eps, norm)
        assert float(distances(projected, torch.zeros_like(delta), norm).max()) <= eps * (1 + 1e-6)
        inside = delta * 1e-4
        assert torch.allclose(project(inside, eps, norm), inside)  # points inside are left alone
        start = random_start(torch.zeros(200, 1, 4, 4), eps, norm, g)
        assert float(distances(start, torch.zeros_like(start), norm).max()) <= eps * (1 + 1e-6)
    labels = torch.zeros(len(delta), dtype=torch.int64)
    with pytest.raises(ValueError, match="unknown norm"):  # the attacks refuse it before anything is projected
        fgsm(nn.Identity(), delta, labels, 0.1, norm="l1")
    with pytest.raises(ValueError, match="unknown norm"):
        pgd(nn.Identity(), delta, labels, 0.1, norm="l1", generator=g)
