"""Spec section for the ONNX export of the final student and its optional int8 quantization."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from compressor.spec.base import Section


class QuantizeSpec(Section):
    """Int8 quantization of the exported student with onnxruntime, behind an accuracy gate.

    ``static`` writes a QDQ model whose activation ranges are calibrated on training images; ``dynamic`` quantizes
    the weights only and computes activation ranges at run time. The int8 model becomes the deployable
    ``student.int8.onnx`` only when its accuracy on the validation split is at most ``max_accuracy_drop`` below
    the fp32 model's (without validation samples it is refused).
    """

    enabled: bool = False
    mode: Literal["static", "dynamic"] = "static"
    calibration_samples: int = Field(512, ge=1, le=1_000_000,
                                     description="training images used to calibrate static ranges")
    calibration_method: Literal["minmax", "entropy", "percentile"] = "minmax"
    per_channel: bool = Field(True, description="one weight scale per output channel (static mode)")
    max_accuracy_drop: float = Field(
        0.01, ge=0.0, le=1.0,
        description="largest accepted drop of validation accuracy vs fp32 (fraction, 0.01 = 1 point)",
    )


class ExportSpec(Section):
    """ONNX export of the final student, its parity check in onnxruntime and optional int8 quantization."""

    onnx: bool = True
    opset: int = Field(18, ge=17, le=23)
    parity_atol: float = Field(1e-3, gt=0.0, description="largest |logit difference| accepted vs PyTorch")
    min_agreement: float = Field(0.99, ge=0.0, le=1.0, description="smallest accepted argmax agreement")
    quantize: QuantizeSpec = Field(default_factory=QuantizeSpec)
