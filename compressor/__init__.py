"""compressor: robust multi-teacher distillation of noisily labelled image classifiers.

The Python API (the command line does the same work):

- ``compressor.Spec`` / ``compressor.load_spec(path)``: a validated spec.
- ``compressor.run(spec)``: the pipeline, returning a ``RunResult``.
- ``compressor.register_model`` / ``compressor.register_method``: your own architecture or distillation method,
  usable from a spec by name.
- ``compressor.ops``: the two fused ops; ``compressor.export.OnnxClassifier``: the exported model at run time.

Names are imported on first use, so ``import compressor`` stays cheap (the command line's ``--help`` does not load
torch).
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

# public name -> (module, attribute); loaded on first access (PEP 562)
_LAZY = {
    "Spec": ("compressor.spec", "Spec"),
    "SpecError": ("compressor.spec", "SpecError"),
    "load_spec": ("compressor.spec", "load_spec"),
    "run": ("compressor.api", "run"),
    "RunResult": ("compressor.api", "RunResult"),
    "register_model": ("compressor.models.registry", "register_model"),
    "register_method": ("compressor.methods.registry", "register_method"),
}

__all__ = [*_LAZY, "__version__"]


def __getattr__(name: str):
    """Import the public names on first use."""
    if name not in _LAZY:
        raise AttributeError(f"module 'compressor' has no attribute {name!r}")
    module, attribute = _LAZY[name]
    value = getattr(importlib.import_module(module), attribute)
    globals()[name] = value
    return value
