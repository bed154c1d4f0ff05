"""Loss landscape: filter-normalised directions and the loss surface around the trained weights."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from compressor.models import build_classifier
from compressor.robustness.attacks import attack_loss
from compressor.robustness.landscape import filter_normalized_direction, loss_surface
from compressor.task import Task


def test_direction_filters_have_the_norms_of_the_weight_filters():
    torch.manual_seed(0)
    model = build_classifier("tiny_cnn", 1, 10, 8, [0.3], [0.4])
    direction = filter_normalized_direction(model, torch.Generator().manual_seed(0))
    for p, d in zip(model.parameters(), direction, strict=True):
        assert d.shape == p.shape
        if p.dim() <= 1:
            assert not d.any()  # biases and batch-norm parameters stay put
        else:
            torch.testing.assert_close(d.flatten(1).norm(dim=1), p.detach().flatten(1).norm(dim=1))


def test_surface_centre_is_the_model_loss_and_the_model_is_untouched():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 3)).eval()
    x, y = torch.rand(40, 1, 4, 4), torch.randint(0, 3, (40,))
    before = [p.detach().clone() for p in model.parameters()]
    surface = loss_surface(model, x, y, Task.MULTICLASS, grid=5, span=0.5, generator=torch.Generator().manual_seed(0),
                           batch_size=16)
    with torch.no_grad():
        centre = float(attack_loss(model(x), y, Task.MULTICLASS).mean())
        accuracy = float((model(x).argmax(1) == y).float().mean())
    assert surface["coordinates"] == pytest.approx([-0.5, -0.25, 0.0, 0.25, 0.5])
    assert surface["loss"][2][2] == pytest.approx(centre, rel=1e-5)
    assert surface["accuracy"][2][2] == pytest.approx(accuracy)
    assert len(surface["loss"]) == 5 and all(len(row) == 5 for row in surface["loss"])
    assert surface["loss"][0][0] != pytest.approx(centre)  # the corners are elsewhere in weight space
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
