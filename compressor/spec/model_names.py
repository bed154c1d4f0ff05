"""Names of the built-in architectures, importable without torch.

``compressor validate`` checks a spec's architectures against this tuple first, so validating a spec does not import
torch and torchvision (seconds); a name not in it (an architecture registered with
``compressor.models.register_model``) is looked up in the full registry. ``tests/test_models.py`` keeps the tuple
equal to what the registry's built-in modules register.
"""

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
