"""Robustness evaluation of one model end to end (no pipeline): multiclass and multi-label, reproducible."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from compressor.data.types import Split
from compressor.robustness.evaluate import evaluate_model, select_data
from compressor.spec.robustness import RobustnessSpec
from compressor.task import Task

SPEC = RobustnessSpec.model_validate({
    "samples": 40,
    "attacks": {"linf_eps": [0.05], "l2_eps": [0.5], "steps": 2},
    "corruptions": {"names": ["contrast", "jpeg"], "severities": [1, 5]},
    "smoothing": {"n0": 10, "n": 60, "predict_n": 20, "samples": 6, "radii": [0.0, 0.1]},
    "landscape": {"grid": 3, "samples": 16},
})


def split(task: str, n: int = 60) -> Split:
    g = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (n, 1, 8, 8), generator=g, dtype=torch.uint8)
    if task == Task.MULTILABEL:
        labels = (torch.rand(n, 3, generator=g) < 0.4).float().numpy()
    else:
        labels = torch.randint(0, 3, (n,), generator=g).numpy()
    return Split(images, labels)


@pytest.mark.parametrize("task", list(Task))
def test_every_figure_is_computed_in_range_and_reproducible(task):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 3)).eval()
    test, train = split(task), split(task, 30)
    data = select_data(test, train, task, SPEC, seed=5)
    assert sorted(data.index.tolist()) == list(range(60))
    first = evaluate_model(model, data, SPEC, seed=5, device="cpu", name="m")
    second = evaluate_model(model, data, SPEC, seed=5, device="cpu", name="m")
    first.pop("seconds"), second.pop("seconds")
    assert first == second  # one seed, same figures
    assert first["samples"] == 40
    for norm, eps in (("linf", 0.05), ("l2", 0.5)):
        for method in ("fgsm", "pgd"):
            (entry,) = first["attacks"][norm][method]
            assert entry["eps"] == eps and 0 <= entry["accuracy"] <= first["clean"]["accuracy"] + 1e-9
            assert entry["max_perturbation"] <= eps * (1 + 1e-5)
    corruptions = first["corruptions"]
    assert set(corruptions["table"]) == {"contrast", "jpeg"}
    every = [a for row in corruptions["table"].values() for a in row["accuracy"]]
    assert corruptions["mca"] == pytest.approx(np.mean(every))
    smoothing = first["smoothing"]
    assert smoothing["per_sample"]["test_index"] == data.index[:6].tolist()
    assert [e["radius"] for e in smoothing["certified_accuracy"]] == [0.0, 0.1]
    assert 0 <= smoothing["abstain_rate"] <= 1 and "predict" in smoothing
    assert np.asarray(first["landscape"]["loss"]).shape == (3, 3)


def test_parts_can_be_switched_off():
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 3)).eval()
    spec = SPEC.model_copy(update={"corruptions": SPEC.corruptions.model_copy(update={"enabled": False})})
    data = select_data(split(Task.MULTICLASS), split(Task.MULTICLASS), Task.MULTICLASS, spec, seed=0)
    result = evaluate_model(model, data, spec, seed=0, device="cpu", name="m", smoothing=False, landscape=False)
    assert result["corruptions"] is None and result["smoothing"] is None and result["landscape"] is None
    assert result["attacks"] is not None
