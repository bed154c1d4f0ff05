"""An ONNX model (from any framework) as a frozen teacher: a ``torch.nn.Module`` that runs onnxruntime.

``OnnxTeacher(x)`` takes images with pixels in [0, 1] (``float [N, C, H, W]`` on any device), applies the teacher's
input normalisation ``(x - mean) / std``, runs the graph with onnxruntime on the CPU copy and returns ``float32``
logits on ``x``'s device, without gradient. Every consumer of teachers (distillation, the teacher view pool, the report)
therefore treats it like any other teacher. A model that outputs probabilities is read as log-probabilities
(softmax) or log-odds (sigmoid, multi-label), which are logits of the same distribution.

A teacher file installed into a run (``write_onnx_teacher``) is the user's model with its settings (normalisation,
output kind, task) added to the ONNX metadata under ``compressor.teacher``, so the file alone defines its logits.
A graph with a fixed batch size is run in chunks of that size.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnx.external_data_helper import load_external_data_for_model, uses_external_data
from torch import Tensor, nn

from compressor.export.runtime import default_providers
from compressor.io import atomic_path
from compressor.models.weight_files import ModelFileError, one_line
from compressor.task import Task

SETTINGS_KEY = "compressor.teacher"
EXPORT_KEYS = ("task", "class_names", "input_channels", "input_size")  # a compressor export carries these
INPUT_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64}
TINY = 1e-12  # probabilities are clamped to [TINY, 1 - TINY] before the logarithm


def _static(dim: object) -> int | None:
    """A graph dimension when it is a fixed positive integer (None for a symbolic or unknown one)."""
    return dim if isinstance(dim, int) and dim > 0 else None


def is_compressor_export(props: dict[str, str]) -> bool:
    """Whether ONNX metadata is that of a compressor export (normalisation inside the graph, [0, 1] input)."""
    return all(key in props for key in EXPORT_KEYS)


class OnnxTeacher(nn.Module):
    """A frozen ONNX classifier behind the ``nn.Module`` interface of the other teachers.

    Args:
        path: the ``.onnx`` file.
        mean, std: the input normalisation applied to [0, 1] pixels (None: the pixels as they are).
        output: ``logits`` or ``probabilities`` (turned into log-probabilities / log-odds).
        task: the data's task (how probabilities are turned into logits).
        providers: onnxruntime execution providers (default: CUDA when onnxruntime has it, and CPU).

    Raises:
        ModelFileError: onnxruntime cannot load the file, or its inputs and outputs are not one image tensor
            ``[N, C, H, W]`` in and one ``[N, classes]`` tensor out.
    """

    def __init__(self, path: str | Path, mean: list[float] | None = None, std: list[float] | None = None,
                 output: str = "logits", task: Task | str = Task.MULTICLASS, providers: list[str] | None = None):
        super().__init__()
        self.path = Path(path)
        identity = mean is None or std is None or (all(m == 0.0 for m in mean) and all(s == 1.0 for s in std))
        self.mean, self.std = (None, None) if identity else (list(mean), list(std))
        self.output, self.task = output, Task(task)
        self.providers = providers
        if not self.path.is_file():
            raise ModelFileError(f"{self.path}: ONNX model not found")
        self._session = self._open()
        self._check_io()

    @classmethod
    def from_file(cls, path: str | Path, providers: list[str] | None = None) -> OnnxTeacher:
        """The teacher in ``path`` with the settings stored in its metadata (defaults: [0, 1] pixels, logits)."""
        settings = json.loads(read_props(path).get(SETTINGS_KEY, "{}"))
        return cls(path, settings.get("mean"), settings.get("std"), settings.get("output", "logits"),
                   settings.get("task", Task.MULTICLASS), providers)

    def _open(self) -> ort.InferenceSession:
        options = ort.SessionOptions()
        options.intra_op_num_threads = torch.get_num_threads()
        options.log_severity_level = 3  # errors only: no warnings about unused initialisers on the console
        try:
            return ort.InferenceSession(str(self.path), options, providers=self.providers or default_providers())
        except Exception as exc:  # onnxruntime raises its own exception types for unreadable models
            raise ModelFileError(f"{self.path}: onnxruntime cannot load this model ({one_line(exc)})") from None

    def _check_io(self) -> None:
        inputs, outputs = self._session.get_inputs(), self._session.get_outputs()
        if len(inputs) != 1:
            names = ", ".join(i.name for i in inputs)
            raise ModelFileError(f"{self.path}: the model has {len(inputs)} inputs ({names}); a teacher takes one "
                                 "image tensor [N, C, H, W]")
        image = inputs[0]
        if len(image.shape) != 4 or image.type not in INPUT_TYPES:
            raise ModelFileError(f"{self.path}: input {image.name!r} is {image.type} {list(image.shape)}; a teacher "
                                 "takes one float image tensor [N, C, H, W]")
        wanted = self.metadata().get("output_name")
        named = [o for o in outputs if o.name == wanted]
        if not named and len(outputs) != 1:
            raise ModelFileError(f"{self.path}: the model has {len(outputs)} outputs "
                                 f"({', '.join(o.name for o in outputs)}); a teacher has one [N, classes] output")
        logits = (named or outputs)[0]
        if len(logits.shape) != 2:
            raise ModelFileError(f"{self.path}: output {logits.name!r} has shape {list(logits.shape)}; a teacher "
                                 "outputs [N, classes]")
        self.input_name, self.output_name = image.name, logits.name
        self.dtype = INPUT_TYPES[image.type]
        self.batch = _static(image.shape[0])
        self.input_channels, self.input_height, self.input_width = (_static(d) for d in image.shape[1:])
        self.num_outputs = _static(logits.shape[1])

    def metadata(self) -> dict[str, str]:
        """The file's ONNX metadata (``metadata_props``)."""
        return dict(self._session.get_modelmeta().custom_metadata_map)

    @property
    def parameter_count(self) -> int:
        """Number of values in the graph's initialisers (its weights)."""
        graph = onnx.load(str(self.path), load_external_data=False).graph
        return int(sum(int(np.prod(t.dims)) for t in graph.initializer))

    def check_fits(self, channels: int, size: int, num_classes: int) -> None:
        """Raise ``ModelFileError`` when the graph's fixed input or output sizes differ from the data's."""
        if self.input_channels is not None and self.input_channels != channels:
            convertible = self.input_channels in (1, 3)
            hint = f" (set data.channels: {self.input_channels} to convert them)" if convertible else ""
            raise ModelFileError(f"{self.path}: the model takes {self.input_channels}-channel images, the data has "
                                 f"{channels}{hint}")
        fixed = [d for d in (self.input_height, self.input_width) if d is not None]
        if any(d != size for d in fixed):
            h, w = self.input_height or "any", self.input_width or "any"
            hint = f" (set data.image_size: {h})" if h == w else ""
            raise ModelFileError(f"{self.path}: the model takes {h}x{w} images, the data has {size}x{size}{hint}")
        if self.num_outputs is not None and self.num_outputs != num_classes:
            raise ModelFileError(f"{self.path}: the model has {self.num_outputs} outputs, the data has {num_classes} "
                                 "classes")

    def _run(self, batch: np.ndarray) -> np.ndarray:
        chunk = self.batch or len(batch)
        out = []
        for start in range(0, len(batch), chunk):
            part = batch[start : start + chunk]
            rows = len(part)
            if rows < chunk:  # a graph with a fixed batch size: pad the last chunk, drop the padding's outputs
                part = np.concatenate([part, np.zeros((chunk - rows, *part.shape[1:]), part.dtype)])
            out.append(self._session.run([self.output_name], {self.input_name: part})[0][:rows])
        return np.concatenate(out)

    def forward(self, x: Tensor) -> Tensor:
        with torch.no_grad():
            x = x.detach().float()
            if self.mean is not None:
                mean = torch.tensor(self.mean, device=x.device).view(1, -1, 1, 1)
                std = torch.tensor(self.std, device=x.device).view(1, -1, 1, 1)
                x = (x - mean) / std
            batch = np.ascontiguousarray(x.cpu().numpy(), dtype=self.dtype)
            out = torch.from_numpy(np.asarray(self._run(batch), dtype=np.float32)).to(x.device)
            if self.output == "probabilities":
                p = out.clamp(TINY, 1.0 - TINY)
                out = torch.log(p) - torch.log1p(-p) if self.task.multilabel else torch.log(p)
            return out

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_session"] = None  # an onnxruntime session cannot be pickled: it is opened again from the file
        return state

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)
        self._session = self._open()

    def extra_repr(self) -> str:
        return f"path={str(self.path)!r}, output={self.output!r}"


def read_props(path: str | Path) -> dict[str, str]:
    """An ONNX file's ``metadata_props`` (empty when it is not a readable ONNX file)."""
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception:  # protobuf's DecodeError and friends: the caller's onnxruntime load reports the problem
        return {}
    return {p.key: p.value for p in proto.metadata_props}


def model_file_parts(path: str | Path) -> list[Path]:
    """``path`` and, for an ONNX model whose weights live in external data files, those files (sorted): every file
    the model's content depends on, for keys that must change when any of them does."""
    path = Path(path)
    if path.suffix.lower() != ".onnx" or not path.is_file():
        return [path]
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception:  # protobuf's DecodeError and friends: not readable, so the file alone (its load reports it)
        return [path]
    locations = {entry.value for t in proto.graph.initializer if uses_external_data(t)
                 for entry in t.external_data if entry.key == "location"}
    return [path] + sorted(path.parent / location for location in locations)


def write_onnx_teacher(source: str | Path, target: str | Path, settings: dict) -> None:
    """Write the model ``source`` to ``target`` with ``settings`` in its metadata (``compressor.teacher``).

    The graph and weights are kept as they are; a model whose weights live in an external data file is written
    with its weights in ``<target>.data`` beside it. ``target`` appears complete or not at all.
    """
    source, target = Path(source), Path(target)
    proto = onnx.load(str(source), load_external_data=False)  # parsed once; external weights read in below
    external = any(uses_external_data(t) for t in proto.graph.initializer)
    if external:
        load_external_data_for_model(proto, str(source.parent))
    kept = [p for p in proto.metadata_props if p.key != SETTINGS_KEY]
    del proto.metadata_props[:]
    proto.metadata_props.extend(kept)
    entry = proto.metadata_props.add()
    entry.key, entry.value = SETTINGS_KEY, json.dumps(settings)
    with atomic_path(target) as tmp:
        if external:
            onnx.save_model(proto, str(tmp), save_as_external_data=True, all_tensors_to_one_file=True,
                            location=f"{target.name}.data")
        else:
            onnx.save_model(proto, str(tmp))
