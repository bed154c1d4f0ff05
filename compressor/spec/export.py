"""Spec section for the ONNX export of the final student."""

from __future__ import annotations

from pydantic import Field

from compressor.spec.base import Section


class ExportSpec(Section):
    """ONNX export of the final student and its parity check in onnxruntime."""

    onnx: bool = True
    opset: int = Field(18, ge=17, le=23)
    parity_atol: float = Field(1e-3, gt=0.0, description="largest |logit difference| accepted vs PyTorch")
    min_agreement: float = Field(0.99, ge=0.0, le=1.0, description="smallest accepted argmax agreement")
