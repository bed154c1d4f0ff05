"""The deployable classifier: input normalisation inside the model, so it takes [0, 1] images."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from compressor.models.registry import create_model


class NormalizedClassifier(nn.Module):
    """``backbone((x - mean) / std)`` for images ``x`` in [0, 1].

    Keeping the normalisation inside the model means attacks measure eps in pixel units, and the exported ONNX
    file needs no preprocessing beyond scaling pixels to [0, 1].
    """

    def __init__(self, backbone: nn.Module, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        self.backbone = backbone
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        return self.backbone((x - self.mean) / self.std)


def build_classifier(
    arch: str,
    in_channels: int,
    num_classes: int,
    image_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    dropout: float = 0.0,
) -> NormalizedClassifier:
    """``create_model`` wrapped with the data set's normalisation."""
    return NormalizedClassifier(create_model(arch, in_channels, num_classes, image_size, dropout), mean, std)


def count_parameters(model: nn.Module) -> int:
    """Number of parameters of ``model``."""
    return sum(p.numel() for p in model.parameters())
