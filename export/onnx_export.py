"""Export of a classifier to ONNX with a dynamic batch axis, metadata and a full ``onnx.checker`` check."""

from __future__ import annotations

import io
from pathlib import Path

import onnx
import torch

from compressor.io import atomic_path

from .metadata import encode_metadata
from .quiet import quiet

INPUT_NAME, OUTPUT_NAME = "images", "logits"
STACK_TRACE_KEY = "pkg.torch.onnx.stack_trace"  # node metadata the dynamo exporter fills with Python source paths


def model_opset(proto: onnx.ModelProto) -> int:
    """The default-domain (``ai.onnx``) opset a model imports."""
    return next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))


def _dynamo_export(model: torch.nn.Module, example: torch.Tensor, opset: int) -> onnx.ModelProto:
    """torch.export-based exporter (the default) with a dynamic batch axis."""
    batch = torch.export.Dim("batch", min=1, max=1 << 20)
    program = torch.onnx.export(
        model, (example,), dynamo=True, verbose=False, opset_version=opset,
        input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], dynamic_shapes=({0: batch},), external_data=False,
    )
    return program.model_proto


def _torchscript_export(model: torch.nn.Module, example: torch.Tensor, opset: int) -> onnx.ModelProto:
    """TorchScript-based exporter, for opsets below the dynamo exporter's native 18 (its down-conversion of
    opset-18 graphs fails on ops whose axes moved from attributes to inputs, e.g. ReduceMean)."""
    buffer = io.BytesIO()
    torch.onnx.export(
        model, (example,), buffer, dynamo=False, opset_version=opset, input_names=[INPUT_NAME],
        output_names=[OUTPUT_NAME], dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
    )
    return onnx.load_from_string(buffer.getvalue())


def export_onnx(
    model: torch.nn.Module,
    input_shape: tuple[int, int, int],
    path: str | Path,
    *,
    opset: int = 18,
    metadata: dict[str, object] | None = None,
) -> Path:
    """Write ``model`` (eval mode, on CPU) as ONNX to ``path`` atomically and check it.

    The torch.export-based exporter is used; when it cannot produce the requested opset (it emits 18 natively
    and its down-conversion to 17 can fail), the TorchScript exporter produces it instead.

    Args:
        model: the classifier; takes ``float32 [N, C, H, W]`` images in [0, 1] and returns logits.
        input_shape: ``(C, H, W)``.
        path: destination ``.onnx`` file.
        opset: ONNX opset (17 or newer).
        metadata: key/value pairs stored in the model's ``metadata_props`` (non-strings as JSON).

    Raises:
        onnx.checker.ValidationError: the exported graph failed the full check.
        ValueError: no exporter produced the requested opset.
    """
    model = model.to("cpu").eval()
    example = torch.rand(2, *input_shape)
    with atomic_path(path) as tmp:
        with quiet(("torch.onnx", "onnxscript"), stderr=True):
            proto = _dynamo_export(model, example, opset)
            if model_opset(proto) != opset:
                proto = _torchscript_export(model, example, opset)
        if model_opset(proto) != opset:
            raise ValueError(f"the exporter produced opset {model_opset(proto)}, not the requested {opset}")
        drop_stack_traces(proto)
        set_metadata(proto, metadata or {})
        onnx.save_model(proto, str(tmp))
        onnx.checker.check_model(str(tmp), full_check=True)
    return Path(path)


def drop_stack_traces(proto: onnx.ModelProto) -> None:
    """Remove the exporter's per-node Python stack traces from ``proto`` in place.

    They name the exporting machine's source files by absolute path: the deployed file would carry them, and the same
    model exported from two checkouts would differ byte for byte.
    """
    for node in [*proto.graph.node, *(n for function in proto.functions for n in function.node)]:
        kept = [entry for entry in node.metadata_props if entry.key != STACK_TRACE_KEY]
        del node.metadata_props[:]
        node.metadata_props.extend(kept)


def set_metadata(proto: onnx.ModelProto, metadata: dict[str, object]) -> None:
    """Add or replace ``metadata_props`` entries of ``proto`` in place (non-string values stored as JSON)."""
    encoded = encode_metadata(metadata)
    kept = [(p.key, p.value) for p in proto.metadata_props if p.key not in encoded]
    del proto.metadata_props[:]
    for key, value in [*kept, *encoded.items()]:
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value


def read_metadata(path: str | Path) -> dict[str, str]:
    """The ``metadata_props`` of an ONNX file as a dict of strings."""
    proto = onnx.load(str(path), load_external_data=False)
    return {p.key: p.value for p in proto.metadata_props}
