"""``OnnxClassifier``: run an exported compressor model with onnxruntime only (no PyTorch needed)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from compressor.task import Task

from .metadata import ModelMetadata
from .preprocess import to_model_input


@dataclass(frozen=True)
class Prediction:
    """One of the top-k classes of one image."""

    label: str
    index: int
    probability: float

    def as_dict(self) -> dict[str, object]:
        """JSON-ready ``{"label", "index", "probability"}``."""
        return {"label": self.label, "index": self.index, "probability": self.probability}


def default_providers() -> list[str]:
    """CUDA first when onnxruntime has the CUDA execution provider (the ``gpu`` extra), always CPU as fallback."""
    available = ort.get_available_providers()
    return (["CUDAExecutionProvider"] if "CUDAExecutionProvider" in available else []) + ["CPUExecutionProvider"]


def probabilities(logits: np.ndarray, task: Task) -> np.ndarray:
    """Softmax over classes (multiclass) or an independent sigmoid per label (multilabel), in float64."""
    z = np.asarray(logits, dtype=np.float64)
    if Task(task).multilabel:
        return 0.5 * (1.0 + np.tanh(0.5 * z))  # sigmoid written with tanh: no overflow for large |z|
    z = z - z.max(axis=1, keepdims=True)  # softmax is shift invariant; the shift keeps exp() finite
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


class OnnxClassifier:
    """An exported compressor classifier in an onnxruntime session, with its preprocessing and labels.

    Args:
        path: the ``.onnx`` file written by ``compressor run`` / ``compressor export`` (fp32 or int8).
        providers: onnxruntime execution providers; default CUDA when available, else CPU.
        threads: onnxruntime intra-op threads (None: onnxruntime's default).
        spin: let idle intra-op threads busy-wait for the next call (onnxruntime's default). Lowest latency for
            back-to-back calls; a server that also parses requests on the same cores runs better without it.

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file lacks compressor's metadata (see ``compressor.export.metadata``).
    """

    def __init__(self, path: str | Path, providers: list[str] | None = None, threads: int | None = None,
                 spin: bool = True):
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"{self.path}: ONNX model not found")
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        if not spin:
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self.session = ort.InferenceSession(str(self.path), options, providers=providers or default_providers())
        except Exception as exc:  # onnxruntime raises its own exception types for unreadable models
            raise ValueError(f"{self.path}: onnxruntime cannot load this model ({exc})") from None
        self.metadata = ModelMetadata.from_props(self.session.get_modelmeta().custom_metadata_map, str(self.path))
        self._input = self.session.get_inputs()[0].name

    @property
    def providers(self) -> list[str]:
        """The execution providers the session actually uses."""
        return self.session.get_providers()

    @property
    def class_names(self) -> list[str]:
        """One name per output."""
        return self.metadata.class_names

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of one image."""
        m = self.metadata
        return m.input_channels, m.input_size, m.input_size

    def preprocess(self, images: object, *, resize: bool = True) -> np.ndarray:
        """Images (see ``compressor.export.preprocess.to_model_input``) as the model's ``float32 [N, C, H, W]``."""
        m = self.metadata
        return to_model_input(images, m.input_channels, m.input_size, resize=resize, pixel_format=m.pixel_format)

    def run(self, batch: np.ndarray) -> np.ndarray:
        """Logits of a preprocessed ``float32 [N, C, H, W]`` batch in one onnxruntime call."""
        return self.session.run(None, {self._input: np.ascontiguousarray(batch, dtype=np.float32)})[0]

    def logits(self, images: object, batch_size: int = 256) -> np.ndarray:
        """Logits of any accepted images, run in batches of ``batch_size``."""
        batch = self.preprocess(images)
        return np.concatenate([self.run(batch[i : i + batch_size]) for i in range(0, len(batch), batch_size)])

    def probabilities(self, images: object) -> np.ndarray:
        """Class probabilities (softmax) or label probabilities (sigmoid), ``[N, classes]``."""
        return probabilities(self.logits(images), self.metadata.task)

    def top_k(self, logits: np.ndarray, k: int = 5) -> list[list[Prediction]]:
        """The ``k`` most probable classes of each row of ``logits``, most probable first."""
        probs = probabilities(logits, self.metadata.task)
        k = max(1, min(int(k), probs.shape[1]))
        # Stable sort on the negated probabilities: ties keep the lower class index first.
        order = np.argsort(-probs, axis=1, kind="stable")[:, :k]
        names = self.class_names
        return [[Prediction(names[c], int(c), float(row[c])) for c in idx]
                for row, idx in zip(probs, order, strict=True)]

    def predict(self, images: object, top_k: int = 5) -> list[list[Prediction]]:
        """Top-k predictions for one image or a sequence of images: one list per image.

        Args:
            images: a path, encoded bytes, a PIL image, a numpy array (``H x W``, ``H x W x C``, ``C x H x W``
                or a 4-D batch; integer pixels of the model's type or floats in [0, 1]), or a list of those.
            top_k: how many classes to return per image (capped at the number of classes).

        Raises:
            compressor.export.preprocess.InputError: an input that is not a usable image.
        """
        return self.top_k(self.logits(images), top_k)
