"""Registry of classifier architectures with a timm-style ``create_model`` factory."""

from __future__ import annotations

import difflib
from collections.abc import Callable

from torch import nn

ModelFactory = Callable[..., nn.Module]
_REGISTRY: dict[str, ModelFactory] = {}


def register_model(name: str) -> Callable[[ModelFactory], ModelFactory]:
    """Decorator: register ``factory(in_channels, num_classes, image_size, dropout=0.0) -> nn.Module`` as ``name``."""

    def wrap(factory: ModelFactory) -> ModelFactory:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} registered twice")
        _REGISTRY[name] = factory
        return factory

    return wrap


def list_models() -> list[str]:
    """Names of every registered architecture, sorted."""
    _load_builtin()
    return sorted(_REGISTRY)


def unknown_model_message(name: str) -> str:
    """Error text for an unknown architecture, with the closest registered name."""
    names = list_models()
    close = difflib.get_close_matches(name, names, n=1, cutoff=0.5)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    return f"unknown architecture {name!r}{hint} (available: {', '.join(names)})"


def create_model(name: str, in_channels: int, num_classes: int, image_size: int, dropout: float = 0.0) -> nn.Module:
    """Build the architecture ``name`` for ``in_channels`` x ``image_size`` x ``image_size`` inputs.

    Args:
        name: a registered architecture (see ``list_models()``).
        in_channels: input channels (1 for grayscale, 3 for RGB, any other count works too).
        num_classes: number of output logits (classes, or labels in multi-label tasks).
        image_size: input side in pixels; below 64 px, down-sampling stems are replaced by stride-1 convolutions.
        dropout: dropout rate before the classifier (a "fickle teacher" keeps it active while distilling).

    Raises:
        ValueError: unknown name or invalid sizes.
    """
    _load_builtin()
    if name not in _REGISTRY:
        raise ValueError(unknown_model_message(name))
    if in_channels < 1 or num_classes < 1 or image_size < 4:
        raise ValueError(f"invalid model sizes: in_channels={in_channels} num_classes={num_classes} image={image_size}")
    return _REGISTRY[name](in_channels=in_channels, num_classes=num_classes, image_size=image_size, dropout=dropout)


def _load_builtin() -> None:
    """Import the modules that register the built-in architectures (once)."""
    from compressor.models import small_cnn, torchvision_models, wide_resnet  # noqa: F401
