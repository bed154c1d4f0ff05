"""ONNX export, parity checking and the onnxruntime runtime, packaged as ``compressor.export``."""

from compressor.export.onnx_export import export_onnx, read_metadata
from compressor.export.parity import check_parity, onnx_logits

__all__ = ["check_parity", "export_onnx", "onnx_logits", "read_metadata"]
