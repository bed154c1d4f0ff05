"""Wide residual networks (Zagoruyko & Komodakis, 2016) for small inputs: WRN-16-2 and WRN-40-2."""

from __future__ import annotations

from torch import Tensor, nn

from compressor.models.registry import register_model


class _BasicBlock(nn.Module):
    """Pre-activation residual block: BN-ReLU-conv3x3-BN-ReLU-conv3x3, 1x1 projection when the shape changes."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.bn1, self.conv1 = nn.BatchNorm2d(cin), nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn2, self.conv2 = nn.BatchNorm2d(cout), nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = None if cin == cout and stride == 1 else nn.Conv2d(cin, cout, 1, stride, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(x))
        residual = x if self.shortcut is None else self.shortcut(out)
        out = self.conv1(out)
        out = self.conv2(self.relu(self.bn2(out)))
        return out + residual


class WideResNet(nn.Module):
    """WRN-depth-widen: three groups of (depth - 4) / 6 blocks, widths 16k, 32k, 64k, strides 1, 2, 2."""

    def __init__(self, depth: int, widen: int, in_channels: int, num_classes: int, dropout: float = 0.0):
        super().__init__()
        n = (depth - 4) // 6
        widths = [16, 16 * widen, 32 * widen, 64 * widen]
        layers: list[nn.Module] = [nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False)]
        for group, stride in enumerate((1, 2, 2)):
            for i in range(n):
                layers.append(_BasicBlock(widths[group] if i == 0 else widths[group + 1], widths[group + 1],
                                          stride if i == 0 else 1))
        layers += [nn.BatchNorm2d(widths[3]), nn.ReLU(inplace=True), nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(widths[3], num_classes))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


@register_model("wrn16_2")
def wrn16_2(in_channels: int, num_classes: int, image_size: int, dropout: float = 0.0) -> nn.Module:
    """WRN-16-2 (about 0.7M parameters)."""
    return WideResNet(16, 2, in_channels, num_classes, dropout)


@register_model("wrn40_2")
def wrn40_2(in_channels: int, num_classes: int, image_size: int, dropout: float = 0.0) -> nn.Module:
    """WRN-40-2 (about 2.2M parameters)."""
    return WideResNet(40, 2, in_channels, num_classes, dropout)
