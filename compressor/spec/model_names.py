"""Names of the built-in architectures, importable without torch, and the spec's architecture check.

``compressor validate`` checks a spec's architectures against this tuple first, so validating a spec does not import
torch and torchvision (seconds); a name not in it (an architecture registered with
``compressor.models.register_model``) is looked up in the full registry. ``tests/test_models.py`` keeps the tuple
equal to what the registry's built-in modules register.
"""

from typing import Annotated

from pydantic import AfterValidator

BUILTIN_MODELS = (
    "densenet121",
    "mobilenet_v2",
    "resnet18",
    "resnet34",
    "resnet50",
    "small_cnn",
    "small_cnn_wide",
    "tiny_cnn",
    "wrn16_2",
    "wrn40_2",
)


def check_arch(name: str) -> str:
    """``name`` when it is a known architecture, else ValueError with the closest registered name."""
    if name in BUILTIN_MODELS:  # no torch import for the built-in names
        return name
    from compressor.models.registry import list_models, unknown_model_message

    if name not in list_models():
        raise ValueError(unknown_model_message(name))
    return name


ArchName = Annotated[str, AfterValidator(check_arch)]  # a spec field that names an architecture
