"""A small linear ONNX classifier with compressor's metadata, built with ``onnx.helper`` (no PyTorch export).

``logits = flatten((x - mean) / std) @ W + b``: the same input contract as an exported student (float32 NCHW
pixels in [0, 1], normalisation inside the graph), with a numpy reference to compare the runtime and server to.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from compressor.export.metadata import build_metadata
from compressor.export.onnx_export import set_metadata
from onnx import TensorProto, helper, numpy_helper


@dataclass
class LinearModel:
    """The ONNX file and the numbers it was built from."""

    path: Path
    weight: np.ndarray  # [C*H*W, K]
    bias: np.ndarray  # [K]
    mean: np.ndarray  # [C]
    std: np.ndarray  # [C]
    channels: int
    size: int
    class_names: list[str]
    task: str

    def logits(self, x: np.ndarray) -> np.ndarray:
        """Reference logits of ``float32 [N, C, H, W]`` inputs, in float64."""
        z = (x.astype(np.float64) - self.mean[None, :, None, None]) / self.std[None, :, None, None]
        return z.reshape(len(x), -1) @ self.weight.astype(np.float64) + self.bias


def linear_model(path: Path, *, channels: int = 1, size: int = 8, classes: int = 4, task: str = "multiclass",
                 seed: int = 0, metadata: bool = True, pixel_format=None) -> LinearModel:
    """Write a linear classifier with random weights (fixed by ``seed``) and a dynamic batch axis to ``path``;
    ``pixel_format`` (a ``PixelFormat``) goes into its metadata (None: 8-bit pixels, 0..255)."""
    rng = np.random.default_rng(seed)
    features = channels * size * size
    weight = rng.normal(0, 1.0 / np.sqrt(features), size=(features, classes)).astype(np.float32)
    bias = rng.normal(0, 0.1, size=classes).astype(np.float32)
    mean = rng.uniform(0.2, 0.5, size=channels).astype(np.float32)
    std = rng.uniform(0.2, 0.4, size=channels).astype(np.float32)
    names = [f"class_{i}" for i in range(classes)]
    inits = [
        numpy_helper.from_array(mean.reshape(1, channels, 1, 1), "mean"),
        numpy_helper.from_array(std.reshape(1, channels, 1, 1), "std"),
        numpy_helper.from_array(weight, "weight"),
        numpy_helper.from_array(bias, "bias"),
    ]
    nodes = [
        helper.make_node("Sub", ["images", "mean"], ["centred"]),
        helper.make_node("Div", ["centred", "std"], ["normalised"]),
        helper.make_node("Flatten", ["normalised"], ["flat"], axis=1),
        helper.make_node("Gemm", ["flat", "weight", "bias"], ["logits"]),
    ]
    graph = helper.make_graph(
        nodes, "linear", [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["batch", channels, size, size])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", classes])], inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=9)
    if metadata:
        meta = build_metadata(task=task, class_names=names, in_channels=channels, image_size=size,
                              mean=mean.tolist(), std=std.tolist(), arch="linear", spec_hash="test",
                              pixel_format=pixel_format)
        set_metadata(model, meta)
    onnx.checker.check_model(model, full_check=True)
    onnx.save_model(model, str(path))
    return LinearModel(path, weight, bias.astype(np.float64), mean.astype(np.float64), std.astype(np.float64),
                       channels, size, names, task)
