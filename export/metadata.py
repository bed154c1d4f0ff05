"""The deployment metadata stored in an exported ONNX file's ``metadata_props`` and read back by the runtime.

Every value is a string in the file; non-string values are stored as JSON. Keys written by ``compressor``:

========================  ==========================================================================
``compressor_version``    version of compressor that wrote the file
``metadata_version``      version of this key set (``2``)
``task``                  ``multiclass`` (softmax over classes) or ``multilabel`` (sigmoid per label)
``class_names``           JSON list, one name per output logit
``input_name``            name of the graph input (``images``)
``output_name``           name of the graph output (``logits``)
``input_channels``        C of the ``float32 [N, C, H, W]`` input
``input_size``            H = W of the input
``input_range``           human-readable contract: pixels in [0, 1], NCHW, normalisation inside the graph
``pixel_format``          JSON ``{"dtype": "uint8" | "uint16" | "float32", "window": [low, high]}``: the decoded
                          pixels' type and the data set's window mapping them to [0, 1] (``compressor.export.decode``);
                          absent in version-1 files, which mean ``uint8`` and ``[0, 255]``
``normalization_mean``    JSON list, per-channel mean applied inside the graph (informational)
``normalization_std``     JSON list, per-channel std applied inside the graph (informational)
``arch``                  architecture name in compressor's model registry
``spec_hash``             SHA-256 of the resolved run spec (empty for a checkpoint exported without its run)
``precision``             ``fp32`` or ``int8``
``quantization``          int8 files only: JSON with mode, calibration and the accuracy-gate figures
========================  ==========================================================================
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass, field

from compressor.task import TASKS, Task

from .decode import PixelFormat

METADATA_VERSION = 2
REQUIRED_KEYS = ("task", "class_names", "input_channels", "input_size")
JSON_KEYS = ("metadata_version", "class_names", "input_channels", "input_size", "normalization_mean",
             "normalization_std", "pixel_format", "quantization")


def build_metadata(
    *,
    task: str,
    class_names: list[str],
    in_channels: int,
    image_size: int,
    mean: list[float],
    std: list[float],
    arch: str,
    spec_hash: str = "",
    input_name: str = "images",
    output_name: str = "logits",
    pixel_format: PixelFormat | None = None,
) -> dict[str, object]:
    """The metadata of an fp32 export (values JSON-encoded by the exporter when they are not strings).

    ``pixel_format`` is the data set's pixel type and window (None: 8-bit pixels, window 0..255).
    """
    import compressor

    pixel_format = pixel_format or PixelFormat.type_range("uint8")

    return {
        "compressor_version": compressor.__version__,
        "metadata_version": METADATA_VERSION,
        "task": str(task),
        "class_names": list(class_names),
        "input_name": input_name,
        "output_name": output_name,
        "input_channels": int(in_channels),
        "input_size": int(image_size),
        "input_range": "float32 pixels in [0, 1] (decoded pixels through pixel_format's window), NCHW; "
                       "normalisation is inside the graph",
        "pixel_format": pixel_format.as_json(),
        "normalization_mean": [float(v) for v in mean],
        "normalization_std": [float(v) for v in std],
        "arch": arch,
        "spec_hash": spec_hash,
        "precision": "fp32",
    }


def encode_metadata(metadata: dict[str, object]) -> dict[str, str]:
    """Metadata values as the strings stored in ``metadata_props`` (non-strings as JSON)."""
    return {key: value if isinstance(value, str) else json.dumps(value) for key, value in metadata.items()}


@dataclass(frozen=True)
class ModelMetadata:
    """What a runtime needs to feed the model and read its output, parsed from ``metadata_props``."""

    task: Task
    class_names: list[str]
    input_channels: int
    input_size: int
    input_name: str = "images"
    output_name: str = "logits"
    precision: str = "fp32"
    pixel_format: PixelFormat = field(default_factory=lambda: PixelFormat.type_range("uint8"))
    raw: dict[str, str] = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        """Number of output logits."""
        return len(self.class_names)

    @classmethod
    def from_props(cls, props: dict[str, str], source: str = "model") -> ModelMetadata:
        """Parse the string ``metadata_props`` of a compressor export.

        Raises:
            ValueError: a required key is missing or malformed (the file was not exported by compressor).
        """
        missing = [key for key in REQUIRED_KEYS if key not in props]
        if missing:
            raise ValueError(
                f"{source}: not a compressor ONNX export (metadata key(s) {', '.join(missing)} missing); "
                "export it with `compressor export`"
            )
        try:
            class_names = json.loads(props["class_names"])
            channels, size = int(props["input_channels"]), int(props["input_size"])
            pixel_format = (PixelFormat.from_json(json.loads(props["pixel_format"])) if "pixel_format" in props
                            else PixelFormat.type_range("uint8"))
        except (ValueError, TypeError) as exc:
            raise ValueError(f"{source}: malformed compressor metadata ({exc})") from None
        if props["task"] not in TASKS:
            raise ValueError(f"{source}: unknown task {props['task']!r} in metadata (expected one of "
                             f"{', '.join(TASKS)})")
        if not isinstance(class_names, list) or not class_names or channels < 1 or size < 1:
            raise ValueError(f"{source}: malformed compressor metadata (class_names, input_channels, input_size)")
        return cls(
            task=Task(props["task"]),
            class_names=[str(name) for name in class_names],
            input_channels=channels,
            input_size=size,
            input_name=props.get("input_name", "images"),
            output_name=props.get("output_name", "logits"),
            precision=props.get("precision", "fp32"),
            pixel_format=pixel_format,
            raw=dict(props),
        )

    def as_json(self) -> dict[str, object]:
        """Every metadata key, the JSON-encoded ones decoded (for ``GET /metadata`` and ``predict --json``)."""
        decoded: dict[str, object] = dict(self.raw)
        for key in JSON_KEYS:
            with contextlib.suppress(KeyError, ValueError):
                decoded[key] = json.loads(self.raw[key])
        return decoded
