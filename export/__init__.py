"""ONNX export, int8 quantization, the onnxruntime runtime and server, packaged as ``compressor.export``.

Names are imported lazily: ``from compressor.export import OnnxClassifier`` loads onnxruntime, numpy and Pillow
only, so a deployment needs no PyTorch; the export and parity functions load PyTorch when first used.
"""

from __future__ import annotations

import importlib

_NAMES = {
    "export_onnx": "onnx_export",
    "read_metadata": "onnx_export",
    "set_metadata": "onnx_export",
    "check_parity": "parity",
    "onnx_logits": "parity",
    "export_checked": "checked_export",
    "quantize_model": "quantize",
    "quantize_with_gate": "quantize",
    "accuracy_gate": "quantize",
    "ModelMetadata": "metadata",
    "InputError": "preprocess",
    "to_model_input": "preprocess",
    "OnnxClassifier": "runtime",
    "Prediction": "runtime",
    "MicroBatcher": "batching",
    "create_app": "server",
    "ServerConfig": "server",
    "serve": "server",
}

__all__ = sorted(_NAMES)


def __getattr__(name: str):
    """Import the module that defines ``name`` on first access (PEP 562)."""
    if name not in _NAMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_NAMES[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_NAMES))
