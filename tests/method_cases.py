"""Shared helpers of the method tests: small learnable data, tiny models, one-thread torch.

On a small shared CPU, torch's default of one thread per core loses far more to contention than it gains for
these tiny models, so the method tests run single-threaded (the fixture restores the setting afterwards).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from compressor.data.types import Split


@pytest.fixture(autouse=True)
def one_thread():
    """Run the test with one torch thread."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def toy_split(n: int = 256, classes: int = 3, seed: int = 0, minority: float = 0.0) -> Split:
    """8x8 images whose class is a bright band at rows ``2y, 2y+1``.

    With ``minority > 0`` that share of the samples is group 1 and has inverted contrast (a visual shift the
    model must learn separately); the rest is group 0.
    """
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, n)
    images = rng.integers(0, 40, (n, 1, 8, 8))
    for i, y in enumerate(labels):
        images[i, 0, 2 * y : 2 * y + 2, :] += 200
    images = images.clip(0, 255)
    groups = None
    if minority > 0:
        groups = (rng.random(n) < minority).astype(np.int64)
        images[groups == 1] = 255 - images[groups == 1]
    return Split(torch.from_numpy(images.astype(np.uint8)), labels.astype(np.int64), groups)


def tiny_teacher(classes: int = 5, dropout: float = 0.0, seed: int = 0) -> nn.Module:
    """A small MLP with batch norm and dropout, in eval mode, with non-trivial running statistics."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Dropout(dropout),
                          nn.Linear(32, classes))
    with torch.no_grad():
        model.train()
        for _ in range(3):
            model(torch.rand(16, 1, 8, 8))
    return model.eval()
