"""torchvision ResNet-18/34/50, MobileNet-V2 and DenseNet-121, adapted to small images and any channel count.

Below 64 px the ImageNet stems (7x7 stride-2 convolution + max-pool, or a stride-2 first convolution) would shrink
an 8-32 px input to almost nothing, so they are replaced by a 3x3 stride-1 convolution without pooling. From 64 px
up the ImageNet stem is kept (only its input channels follow the data), so torchvision's ImageNet weights fit:
a ``pretrained`` weights file (``compressor.models.pretrained``) starts these models, with ImageNet's
normalisation. Nothing is downloaded.
"""

from __future__ import annotations

from torch import nn
from torchvision import models as tvm

from compressor.models.registry import register_model

SMALL_IMAGE = 64
IMAGENET_ARCHS = ("resnet18", "resnet34", "resnet50", "mobilenet_v2", "densenet121")


def keeps_imagenet_stem(arch: str, image_size: int) -> bool:
    """Whether ``arch`` at ``image_size`` px is a torchvision ImageNet architecture with its ImageNet stem."""
    return arch in IMAGENET_ARCHS and image_size >= SMALL_IMAGE


def _with_dropout(linear: nn.Linear, num_classes: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(nn.Dropout(dropout), nn.Linear(linear.in_features, num_classes))


def _resnet(builder, in_channels: int, num_classes: int, image_size: int, dropout: float) -> nn.Module:
    model = builder(weights=None)
    if image_size < SMALL_IMAGE:
        model.conv1 = nn.Conv2d(in_channels, 64, 3, 1, 1, bias=False)
        model.maxpool = nn.Identity()
    elif in_channels != 3:
        model.conv1 = nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False)
    model.fc = _with_dropout(model.fc, num_classes, dropout)
    return model


@register_model("resnet18")
def resnet18(in_channels: int, num_classes: int, image_size: int, dropout: float = 0.0) -> nn.Module:
    """ResNet-18 (11M parameters)."""
    return _resnet(tvm.resnet18, in_channels, num_classes, image_size, dropout)


@register_model("resnet34")
def resnet34(in_channels: int, num_classes: int, image_size: int, dropout: float = 0.0) -> nn.Module:
    """ResNet-34 (21M parameters)."""
    return _resnet(tvm.resnet34, in_channels, num_classes, image_size, dropout)


@register_model("resnet50")
def resnet50(in_channels: int, num_classes: int, image_size: int, dropout: float = 0.0) -> nn.Module:
    """ResNet-50 (24M parameters)."""
    return _resnet(tvm.resnet50, in_channels, num_classes, image_size, dropout)


@register_model("mobilenet_v2")
def mobilenet_v2(in_channels: int, num_classes: int, image_size: int, dropout: float = 0.0) -> nn.Module:
    """MobileNet-V2 (2.2M parameters); stride-1 first convolution below 64 px."""
    model = tvm.mobilenet_v2(weights=None)
    first = model.features[0][0]
    stride = 1 if image_size < SMALL_IMAGE else 2
    model.features[0][0] = nn.Conv2d(in_channels, first.out_channels, 3, stride, 1, bias=False)
    model.classifier = _with_dropout(model.classifier[1], num_classes, dropout)
    return model


@register_model("densenet121")
def densenet121(in_channels: int, num_classes: int, image_size: int, dropout: float = 0.0) -> nn.Module:
    """DenseNet-121 (7M parameters); 3x3 stride-1 stem without pooling below 64 px."""
    model = tvm.densenet121(weights=None)
    if image_size < SMALL_IMAGE:
        model.features.conv0 = nn.Conv2d(in_channels, 64, 3, 1, 1, bias=False)
        model.features.pool0 = nn.Identity()
    elif in_channels != 3:
        model.features.conv0 = nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False)
    model.classifier = _with_dropout(model.classifier, num_classes, dropout)
    return model
