"""Triton kernels of the fused ops, packaged as ``compressor.kernels``."""
