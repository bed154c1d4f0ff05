"""Export of a classifier to ONNX with a dynamic batch axis, metadata and a full ``onnx.checker`` check."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import warnings
from pathlib import Path

import onnx
import torch

from compressor.io import atomic_path

INPUT_NAME, OUTPUT_NAME = "images", "logits"


def export_onnx(
    model: torch.nn.Module,
    input_shape: tuple[int, int, int],
    path: str | Path,
    *,
    opset: int = 18,
    metadata: dict[str, object] | None = None,
) -> Path:
    """Write ``model`` (eval mode, on CPU) as ONNX to ``path`` atomically and check it.

    Args:
        model: the classifier; takes ``float32 [N, C, H, W]`` images in [0, 1] and returns logits.
        input_shape: ``(C, H, W)``.
        path: destination ``.onnx`` file.
        opset: ONNX opset (17 or newer).
        metadata: key/value pairs stored in the model's ``metadata_props`` (non-strings as JSON).

    Raises:
        onnx.checker.ValidationError: the exported graph failed the full check.
    """
    model = model.to("cpu").eval()
    example = torch.rand(2, *input_shape)
    batch = torch.export.Dim("batch", min=1, max=1 << 20)
    with atomic_path(path) as tmp:
        quiet = io.StringIO()
        with contextlib.redirect_stdout(quiet), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            logging.getLogger("torch.onnx").setLevel(logging.ERROR)
            program = torch.onnx.export(
                model, (example,), dynamo=True, verbose=False, opset_version=opset,
                input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], dynamic_shapes=({0: batch},),
                external_data=False,
            )
        proto = program.model_proto
        for key, value in (metadata or {}).items():
            entry = proto.metadata_props.add()
            entry.key, entry.value = key, value if isinstance(value, str) else json.dumps(value)
        onnx.save_model(proto, str(tmp))
        onnx.checker.check_model(str(tmp), full_check=True)
    return Path(path)


def read_metadata(path: str | Path) -> dict[str, str]:
    """The ``metadata_props`` of an ONNX file as a dict of strings."""
    proto = onnx.load(str(path), load_external_data=False)
    return {p.key: p.value for p in proto.metadata_props}
