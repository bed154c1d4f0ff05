"""The export section of the spec: int8 quantization settings, defaults and readable errors."""

from __future__ import annotations

import pytest

from compressor.spec import SpecError, parse_spec


def test_quantize_defaults_and_values():
    spec = parse_spec({})
    assert spec.export.quantize.enabled is False and spec.export.quantize.mode == "static"
    assert spec.export.quantize.max_accuracy_drop == 0.01
    spec = parse_spec({"export": {"quantize": {"enabled": True, "mode": "dynamic", "max_accuracy_drop": 0.0}}})
    assert spec.export.quantize.mode == "dynamic" and spec.export.quantize.max_accuracy_drop == 0.0


@pytest.mark.parametrize(
    ("quantize", "message"),
    [
        ({"mod": "static"}, "export.quantize.mod: unknown field .*did you mean 'mode'"),
        ({"mode": "statik"}, "export.quantize.mode: .*did you mean 'static'"),
        ({"max_accuracy_drop": -0.1}, "export.quantize.max_accuracy_drop: .*greater than or equal to 0"),
        ({"calibration_samples": 0}, "export.quantize.calibration_samples: .*greater than or equal to 1"),
        ({"calibration_method": "kl"}, "export.quantize.calibration_method"),
    ],
)
def test_bad_quantize_fields_are_named(quantize, message):
    with pytest.raises(SpecError, match=message):
        parse_spec({"export": {"quantize": quantize}})


def test_opset_below_17_is_refused():
    with pytest.raises(SpecError, match="export.opset"):
        parse_spec({"export": {"opset": 16}})
