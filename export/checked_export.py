"""Export a compressor classifier with its deployment metadata and check parity in onnxruntime."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .decode import PixelFormat
from .metadata import build_metadata
from .onnx_export import INPUT_NAME, OUTPUT_NAME, export_onnx
from .parity import check_parity

PROBE_SAMPLES = 64


def classifier_metadata(info, spec_hash: str = "") -> dict[str, object]:
    """Deployment metadata of a classifier described by a ``compressor.checkpoint.ModelInfo``."""
    return build_metadata(
        task=info.task, class_names=info.class_names or [str(i) for i in range(info.num_classes)],
        in_channels=info.in_channels, image_size=info.image_size, mean=info.mean, std=info.std, arch=info.arch,
        spec_hash=spec_hash, input_name=INPUT_NAME, output_name=OUTPUT_NAME, pixel_format=pixel_format(info),
    )


def pixel_format(info) -> PixelFormat:
    """The pixel type and window a ``ModelInfo``'s model was trained with (8-bit, 0..255 for older checkpoints)."""
    stored = getattr(info, "pixel_format", None)
    return PixelFormat.from_json(stored) if stored else PixelFormat.type_range("uint8")


def probe_images(info, count: int = PROBE_SAMPLES, seed: int = 0) -> torch.Tensor:
    """Uniform random pixels over the model's window, of its input shape, for a parity check without a test set."""
    rng = np.random.default_rng(seed)
    shape = (count, info.in_channels, info.image_size, info.image_size)
    fmt = pixel_format(info)
    if fmt.dtype == "float32":
        return torch.from_numpy(rng.uniform(*fmt.window, size=shape).astype(np.float32))
    low, high = (int(np.clip(v, 0, np.iinfo(fmt.dtype).max)) for v in fmt.window)
    return torch.from_numpy(rng.integers(low, high + 1, size=shape).astype(fmt.dtype))


def export_checked(
    model: torch.nn.Module,
    info,
    path: str | Path,
    *,
    opset: int = 18,
    spec_hash: str = "",
    test_images: torch.Tensor | None = None,
    test_labels: np.ndarray | None = None,
    parity_atol: float = 1e-3,
    min_agreement: float = 0.99,
) -> dict:
    """Export ``model`` to ``path`` with metadata, then compare onnxruntime with PyTorch.

    Args:
        info: the model's ``ModelInfo`` (task, classes, input shape, normalisation, architecture).
        test_images: ``[N, C, H, W]`` test pixels (of ``info``'s pixel type) for the parity check; None uses random
            probe images (agreement and logit difference only, no accuracy).
        test_labels: labels of ``test_images`` (None with probe images).

    Returns:
        ``{"onnx": file name, "opset", "metadata", "parity"}``; ``parity`` is ``check_parity``'s report plus
        ``images`` (``"test set"`` or ``"random probe, no test set"``).
        When parity fails the ONNX file is removed (it is not a faithful export) and ``parity.passed`` is False.
    """
    path = Path(path)
    metadata = classifier_metadata(info, spec_hash)
    export_onnx(model, (info.in_channels, info.image_size, info.image_size), path, opset=opset, metadata=metadata)
    source = "test set"
    if test_images is None or len(test_images) == 0:
        test_images, test_labels, source = probe_images(info), None, "random probe, no test set"
    parity = check_parity(path, model, test_images, test_labels, info.task, atol=parity_atol,
                          min_agreement=min_agreement, window=pixel_format(info).window)
    parity["images"] = source
    if not parity["passed"]:
        path.unlink(missing_ok=True)
    return {"onnx": path.name, "opset": opset, "metadata": metadata, "parity": parity}


def parity_failure(parity: dict) -> str:
    """One line that says why a parity check failed."""
    return (f"ONNX parity check failed: max |logit difference| {parity['max_abs_diff']:.2e} (allowed "
            f"{parity['atol']:.0e}), argmax agreement {parity['agreement']:.4f} (required {parity['min_agreement']})")
