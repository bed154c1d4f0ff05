"""ONNX export and the onnxruntime runtime, packaged as ``compressor.export``."""
