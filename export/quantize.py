"""Int8 quantization of an exported fp32 model with onnxruntime's tools, behind an accuracy gate.

Flow (``quantize_with_gate``):

1. ``quant_pre_process``: symbolic shape inference and graph optimisation (e.g. Conv + BatchNorm folding), so
   every tensor the quantizer sees has a known shape and folded weights get one scale each.
2. ``static`` mode: ``quantize_static`` in QDQ format (QuantizeLinear/DequantizeLinear pairs around each quantized
   op, which onnxruntime fuses into int8 kernels). Activations are uint8 with a scale and zero point from the
   calibration ranges observed on training images (min/max, entropy or percentile); weights are int8, symmetric,
   one scale per output channel when ``per_channel``. ``dynamic`` mode: ``quantize_dynamic`` stores int8 weights
   and computes each activation's range at run time (ConvInteger/MatMulInteger), so it needs no calibration.
3. Gate: fp32 and int8 accuracy on the validation split (its labels as given) in onnxruntime; a gate decides, so
   it never looks at the test split. The int8 model becomes the deployable file only when
   ``accuracy_fp32 - accuracy_int8 <= max_accuracy_drop``; otherwise (or without validation images) it is kept
   under a ``rejected`` name (never the deployable one) and the report says why.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import onnx

from compressor.io import atomic_path
from compressor.task import Task

from .decode import PixelFormat
from .onnx_export import set_metadata
from .parity import UnitInputs, onnx_logits
from .quiet import quiet

MODES = ("static", "dynamic")
CALIBRATION_METHODS = ("minmax", "entropy", "percentile")


class ImagesReader:
    """An onnxruntime ``CalibrationDataReader`` over ``float32 [N, C, H, W]`` images, fed in fixed-size batches."""

    def __init__(self, images: np.ndarray, input_name: str, batch_size: int = 64):
        self._feeds = iter([{input_name: images[i : i + batch_size]} for i in range(0, len(images), batch_size)])

    def get_next(self) -> dict[str, np.ndarray] | None:
        """The next calibration batch as an input feed, or None when exhausted."""
        return next(self._feeds, None)


def calibration_images(images, count: int, seed: int, pixel_format: PixelFormat | None = None) -> np.ndarray:
    """``count`` training images (``[N, C, H, W]`` pixels: an array, tensor or store) drawn without replacement, as
    ``float32`` in [0, 1] through the data set's window (``pixel_format``; None: 8-bit, 0..255)."""
    rng = np.random.default_rng(seed)
    index = np.sort(rng.choice(len(images), size=min(count, len(images)), replace=False))
    fmt = pixel_format or PixelFormat.type_range("uint8")
    return np.ascontiguousarray(fmt.to_unit(np.asarray(images[index])))


def quantize_model(
    fp32_path: str | Path,
    out_path: str | Path,
    *,
    mode: str = "static",
    calibration: np.ndarray | None = None,
    calibration_method: str = "minmax",
    per_channel: bool = True,
) -> dict:
    """Write an int8 version of the fp32 ONNX model at ``fp32_path`` to ``out_path`` (not atomically: a scratch file).

    Args:
        mode: ``static`` (QDQ, calibrated) or ``dynamic`` (int8 weights, run-time activation ranges).
        calibration: ``float32 [N, C, H, W]`` images in [0, 1]; required in static mode.
        calibration_method: ``minmax``, ``entropy`` or ``percentile`` (static mode).
        per_channel: one weight scale per output channel.

    Returns:
        How the model was quantized (mode, format, calibration, pre-processing).

    Raises:
        ValueError: unknown mode or method, or static mode without calibration images.
    """
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_dynamic, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if mode not in MODES:
        raise ValueError(f"unknown int8 mode {mode!r} (expected one of {', '.join(MODES)})")
    if calibration_method not in CALIBRATION_METHODS:
        raise ValueError(f"unknown calibration method {calibration_method!r} ({', '.join(CALIBRATION_METHODS)})")
    if mode == "static" and (calibration is None or len(calibration) == 0):
        raise ValueError("static int8 quantization needs calibration images")
    out_path = Path(out_path)
    info: dict = {"mode": mode, "per_channel": per_channel}
    with tempfile.TemporaryDirectory(dir=out_path.parent) as scratch, quiet():
        source = Path(scratch) / "preprocessed.onnx"
        try:
            quant_pre_process(str(fp32_path), str(source))
            info["pre_process"] = "quant_pre_process (shape inference + optimisation)"
        except Exception as exc:  # noqa: BLE001 - pre-processing is an optimisation; quantize the original instead
            source = Path(fp32_path)
            info["pre_process"] = f"skipped ({exc.__class__.__name__}: {exc})"
        if mode == "static":
            input_name = onnx.load(str(source), load_external_data=False).graph.input[0].name
            method = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
                      "percentile": CalibrationMethod.Percentile}[calibration_method]
            quantize_static(
                str(source), str(out_path), ImagesReader(calibration, input_name),
                quant_format=QuantFormat.QDQ, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                per_channel=per_channel, calibrate_method=method,
            )
            info.update(format="QDQ", activations="uint8 (asymmetric, calibrated)",
                        weights="int8 (symmetric)", calibration_samples=int(len(calibration)),
                        calibration_method=calibration_method)
        else:
            quantize_dynamic(str(source), str(out_path), weight_type=QuantType.QInt8, per_channel=per_channel)
            info.update(format="integer ops (ConvInteger / MatMulInteger)", activations="uint8 (run-time ranges)",
                        weights="int8")
    return info


def accuracy_gate(accuracy_fp32: float, accuracy_int8: float, max_drop: float,
                  split: str = "validation") -> tuple[bool, str]:
    """Whether the int8 model may replace the fp32 one: its accuracy is at most ``max_drop`` below fp32's.

    Returns:
        ``(passed, reason)``; the reason quotes both accuracies (on ``split``), the drop and the limit.
    """
    drop = accuracy_fp32 - accuracy_int8
    figures = (f"int8 {split} accuracy {accuracy_int8:.4f} vs fp32 {accuracy_fp32:.4f}: drop {drop:+.4f} "
               f"(limit {max_drop:.4f})")
    # A tiny tolerance so that a drop equal to the limit, up to float rounding of the two means, passes.
    if drop <= max_drop + 1e-12:
        return True, f"accepted: {figures}"
    return False, f"refused: {figures} exceeds the spec's export.quantize.max_accuracy_drop"


def int8_logits(path: str | Path, images: np.ndarray | UnitInputs) -> np.ndarray:
    """Logits of the int8 candidate on the gate's images in onnxruntime (the evaluation the gate relies on)."""
    return onnx_logits(path, images)


def quantize_with_gate(
    fp32_path: str | Path,
    deploy_path: str | Path,
    rejected_path: str | Path,
    *,
    mode: str,
    calibration: np.ndarray | None,
    images: np.ndarray | UnitInputs,
    labels: np.ndarray,
    task: str,
    max_accuracy_drop: float,
    calibration_method: str = "minmax",
    per_channel: bool = True,
) -> dict:
    """Quantize, evaluate fp32 and int8 on the validation images and write the int8 file where the gate says.

    Passed: the int8 model goes to ``deploy_path`` and any stale ``rejected_path`` is removed. Refused (or
    quantization failed): the int8 model, if any, goes to ``rejected_path`` and any stale ``deploy_path`` is
    removed, so a deployable int8 file always passed the gate. Both writes are atomic.

    Args:
        images: ``float32 [N, C, H, W]`` validation images in [0, 1] (an array, or ``UnitInputs`` reading a split
            batch by batch); ``labels`` their labels (as given). Without images the int8 model is refused (nothing to
            decide on).

    Returns:
        The report recorded in ``export.json``: ``passed``, ``reason``, ``file`` (the deployable int8 file or None),
        ``rejected_file``, the accuracies, ``accuracy_drop``, ``agreement`` and ``max_abs_logit_diff`` with fp32,
        the file sizes and how the model was quantized.
    """
    fp32_path, deploy_path, rejected_path = Path(fp32_path), Path(deploy_path), Path(rejected_path)
    report: dict = {"mode": mode, "max_accuracy_drop": max_accuracy_drop, "file": None, "rejected_file": None,
                    "split": "validation", "samples": int(len(images))}
    if len(images) == 0:
        deploy_path.unlink(missing_ok=True)
        rejected_path.unlink(missing_ok=True)
        return {**report, "passed": False, "reason": "refused: no validation images to measure the int8 accuracy on "
                "(set data.val_fraction > 0, or give the data a val split)"}
    fp32_logits = onnx_logits(fp32_path, images)
    task = Task(task)
    report["accuracy_fp32"] = task.accuracy(fp32_logits, labels)
    with tempfile.TemporaryDirectory(dir=deploy_path.parent) as scratch:
        candidate = Path(scratch) / "int8.onnx"
        try:
            report["quantization"] = quantize_model(fp32_path, candidate, mode=mode, calibration=calibration,
                                                    calibration_method=calibration_method, per_channel=per_channel)
        except Exception as exc:  # noqa: BLE001 - the fp32 export stays valid; the report says what failed
            deploy_path.unlink(missing_ok=True)
            return {**report, "passed": False, "reason": f"quantization failed: {exc.__class__.__name__}: {exc}"}
        logits = int8_logits(candidate, images)
        report["accuracy_int8"] = task.accuracy(logits, labels)
        report["accuracy_drop"] = report["accuracy_fp32"] - report["accuracy_int8"]
        report["agreement"] = task.agreement(logits, fp32_logits)
        report["max_abs_logit_diff"] = float(np.abs(logits - fp32_logits).max()) if logits.size else 0.0
        passed, reason = accuracy_gate(report["accuracy_fp32"], report["accuracy_int8"], max_accuracy_drop)
        report.update(passed=passed, reason=reason)
        target, stale = (deploy_path, rejected_path) if passed else (rejected_path, deploy_path)
        proto = onnx.load(str(candidate))
        gate = {k: report[k] for k in ("accuracy_fp32", "accuracy_int8", "accuracy_drop", "max_accuracy_drop",
                                       "agreement", "passed", "split", "samples")}
        set_metadata(proto, {"precision": "int8", "quantization": {**report["quantization"], **gate}})
        with atomic_path(target) as tmp:
            onnx.save_model(proto, str(tmp))
            onnx.checker.check_model(str(tmp), full_check=True)
        stale.unlink(missing_ok=True)
    report["file" if passed else "rejected_file"] = target.name
    report["size_bytes"] = target.stat().st_size
    report["fp32_size_bytes"] = fp32_path.stat().st_size
    return report


def int8_paths(fp32_path: str | Path) -> tuple[Path, Path]:
    """``(deployable, rejected)`` int8 paths beside an fp32 file: ``x.int8.onnx`` and ``x.int8.rejected.onnx``."""
    fp32_path = Path(fp32_path)
    stem = fp32_path.name.removesuffix(".onnx")
    return fp32_path.with_name(f"{stem}.int8.onnx"), fp32_path.with_name(f"{stem}.int8.rejected.onnx")
