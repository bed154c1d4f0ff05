"""A small convolutional network for tiny inputs (e.g. 8x8 digits, 28x28 MedMNIST)."""

from __future__ import annotations

from torch import Tensor, nn

from compressor.models.registry import register_model


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class SmallCNN(nn.Module):
    """Three conv-BN-ReLU stages (widths w, 2w, 4w) with 2x pooling between stages, global pooling and a linear head."""

    def __init__(self, in_channels: int, num_classes: int, width: int = 16, dropout: float = 0.0):
        super().__init__()
        self.features = nn.Sequential(
            _block(in_channels, width),
            nn.MaxPool2d(2, ceil_mode=True),
            _block(width, 2 * width),
            nn.MaxPool2d(2, ceil_mode=True),
            _block(2 * width, 4 * width),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(4 * width, num_classes))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


@register_model("small_cnn")
def small_cnn(in_channels: int, num_classes: int, image_size: int, dropout: float = 0.0) -> nn.Module:
    """SmallCNN with base width 16 (about 24k parameters)."""
    return SmallCNN(in_channels, num_classes, width=16, dropout=dropout)


@register_model("small_cnn_wide")
def small_cnn_wide(in_channels: int, num_classes: int, image_size: int, dropout: float = 0.0) -> nn.Module:
    """SmallCNN with base width 48 (about 0.2M parameters): a larger teacher for tiny inputs."""
    return SmallCNN(in_channels, num_classes, width=48, dropout=dropout)


@register_model("tiny_cnn")
def tiny_cnn(in_channels: int, num_classes: int, image_size: int, dropout: float = 0.0) -> nn.Module:
    """SmallCNN with base width 8 (about 6k parameters): a compact student."""
    return SmallCNN(in_channels, num_classes, width=8, dropout=dropout)
