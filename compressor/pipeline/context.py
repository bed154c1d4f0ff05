"""State shared by the stages of one run: spec, run directory, device and the data loaded once."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch

from compressor import distributed
from compressor.checkpoint import ModelInfo
from compressor.data import DataBundle, DataError, prepare_data
from compressor.data.sources import SPLITS
from compressor.distributed import DistInfo
from compressor.io import read_json
from compressor.model_files import load_teacher, registry_from_file
from compressor.models.weight_files import ModelFileError
from compressor.pipeline.split_guard import GuardedSplit
from compressor.run_layout import RunLayout
from compressor.spec import Spec
from compressor.spec.model_files import PretrainedSpec, TeacherModelSpec

T = TypeVar("T")


class StageError(Exception):
    """A stage failed for a reason the user can act on (message printed without a traceback).

    ``exit_code`` is the exit status of ``compressor run``: 2 (bad input: spec, data, model file) unless a quality
    check failed (3, given as ``exit_code=3``).
    """

    exit_code = 2

    def __init__(self, message: str, exit_code: int | None = None):
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code


class InputFileError(StageError):
    """A file the spec names (a teacher model, a weights file) cannot be used: bad input, exit status 2."""


def resolve_device(name: str, dist: DistInfo | None = None) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; asking for CUDA without one is an error.

    In a distributed run on CUDA each rank uses the GPU of its local rank.
    """
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise StageError("device: cuda was asked for but no CUDA device is available (use device: auto or cpu)")
    if name == "cuda" and dist is not None and dist.enabled:
        return torch.device("cuda", dist.local_rank)
    return torch.device(name)


@dataclass
class RunContext:
    """What every stage reads: the resolved spec, the run directory, the device, this process's rank, cached data.

    In a distributed run every rank holds a context; only rank 0 (``dist.is_main``) writes into ``run_dir``.
    """

    spec: Spec
    run_dir: Path
    device: torch.device
    resume: bool = False  # continue interrupted training loops from their epoch checkpoints
    stage: str = ""  # name of the stage being run (set by the runner; "" outside a pipeline stage)
    keys: dict[str, str] = field(default_factory=dict)  # every stage's key (set by the runner)
    dist: DistInfo = field(default_factory=DistInfo)
    _source: DataBundle | None = field(default=None, repr=False)  # the data as the spec's source gives it
    _bundle: DataBundle | None = field(default=None, repr=False)

    @property
    def layout(self) -> RunLayout:
        """Every path of the run directory."""
        return RunLayout(self.run_dir)

    @property
    def current_key(self) -> str:
        """The key of the stage being run ("" outside a pipeline stage)."""
        return self.keys.get(self.stage, "")

    def on_main(self, what: str, work: Callable[..., T], *args, errors: tuple[type[Exception], ...] = ()) -> T:
        """``work(*args)`` run on rank 0 while the other ranks wait: every rank returns its result (it must pickle).

        A ``StageError``, ``DataError`` or one of ``errors`` (errors the user can act on) is raised on every rank; any
        other exception on rank 0, and as a ``RuntimeError`` naming ``what`` on the others (none waits forever).
        """
        if self.dist.is_main:
            try:
                result = work(*args)
            except Exception as exc:
                user = isinstance(exc, (StageError, DataError, *errors))
                distributed.broadcast_object(("error", exc) if user else ("crash", f"{type(exc).__name__}: {exc}"))
                raise
            distributed.broadcast_object(("ok", result))
            return result
        status, value = distributed.broadcast_object(None)
        if status == "error":
            raise value
        if status == "crash":
            raise RuntimeError(f"{what} failed on rank 0: {value}")
        return value

    def source_data(self) -> DataBundle:
        """The data loaded, checked and noised from the spec's source (``prepare_data``), loaded once.

        Raises:
            DataError: the data cannot be used (the message names the file and the problem).
        """
        if self._source is None:
            self._source = prepare_data(self.spec)
        return self._source

    def guarded(self, bundle: DataBundle) -> DataBundle:
        """A copy of ``bundle`` whose test split is a ``GuardedSplit`` of this context's running stage (the source's
        split stays bare)."""
        return replace(bundle, test=GuardedSplit(bundle.test, lambda: self.stage))

    def bundle(self) -> DataBundle:
        """The data bundle, with the train/val labels exactly as the data stage saved them.

        Its test split is a ``GuardedSplit``: only the data, metrics, certify and report stages may read it.
        """
        if self._bundle is None:
            saved, summary = self.layout.data_labels, self.layout.data_summary
            if self._source is not None:  # read in full already (the data stage, or the check before a run)
                bundle = self._source
            else:  # the data stage's window and statistics, so later stages need not read every image again
                bundle = prepare_data(self.spec, read_json(summary) if saved.exists() and summary.exists() else None)
            if saved.exists():
                with np.load(saved, allow_pickle=False) as arrays:
                    labels = {name: arrays[f"{name}_labels"] for name in SPLITS if f"{name}_labels" in arrays}
                splits = {name: replace(getattr(bundle, name), labels=value) for name, value in labels.items()
                          if len(value) == len(getattr(bundle, name))}
                bundle = replace(bundle, **splits)  # copies: the source data stays as loaded
            self._bundle = self.guarded(bundle)
        return self._bundle

    def model_info(self, arch: str, dropout: float = 0.0) -> ModelInfo:
        """``ModelInfo`` of an architecture for this run's data."""
        b = self.bundle()
        return ModelInfo(arch, b.channels, b.num_classes, b.image_size, b.mean, b.std, b.task, b.class_names, dropout,
                         b.pixel_format.as_json())

    def teacher_paths(self) -> list[Path]:
        """Model file of each teacher in the run directory: a compressor checkpoint, or an ONNX file for an existing
        ONNX teacher."""
        teachers = self.spec.teachers
        return [self.layout.teacher_file(i, teachers.is_onnx(i)) for i in range(self.spec.subsets.count)]

    def load_teachers(self) -> list[torch.nn.Module]:
        """The teachers (trained, fine-tuned or existing ones), each an ``nn.Module`` taking [0, 1] pixels, in eval
        mode on the run's device; an ONNX teacher runs with onnxruntime (``compressor.models.onnx_teacher``)."""
        return [load_teacher(p, self.device) for p in self.teacher_paths()]

    def initial_model(self, arch: str, dropout: float, pretrained: PretrainedSpec | TeacherModelSpec | None,
                      ) -> tuple[torch.nn.Module, ModelInfo, list[str]]:
        """A freshly built model of ``arch`` for this run's data, started from ``pretrained`` weights when given.

        Returns:
            The model, its info (with the normalisation chosen for the pretrained weights) and notes for the log
            (what was re-initialised or adapted).

        Raises:
            InputFileError: the weights file is missing, unreadable or does not fit ``arch`` (exit status 2).
        """
        info = self.model_info(arch, dropout)
        if pretrained is None:
            return info.build(), info, []
        try:
            return registry_from_file(info, pretrained, pretrained.path, exact=False)
        except ModelFileError as exc:
            raise InputFileError(str(exc)) from None
