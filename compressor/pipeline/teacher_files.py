"""Where the teachers come from: trained from scratch, started from pretrained weights, or existing files.

``teachers.models`` lists existing teachers, one per subset (``subsets.count = len(models)``):

* ``{path: teacher.onnx}``: any framework's model run with onnxruntime. It is checked against the data (one image
  input with the data's channels and size, one ``[N, classes]`` output, finite outputs on a few training images)
  and installed as ``teachers/teacher_<i>.onnx`` with its input normalisation and output kind in its metadata.
* ``{path: weights.safetensors | .pth | .pt, arch: NAME}``: the weights of a registry architecture, loaded with a
  strict key and shape match (``arch`` may be left out for a compressor checkpoint) and installed as the usual
  ``teachers/teacher_<i>.safetensors`` checkpoint.
* ``finetune: true`` (weights only): the file starts a teacher that trains further on its subset with
  ``teachers.training``, as a pretrained start.

``teachers.pretrained`` starts every teacher of ``teachers.archs`` from one weights file, ``student.pretrained``
the student. A teacher used as it is trains nothing; its record has an empty history. The stage keys include
the SHA-256 of these files, so a changed file re-runs its stage and everything downstream.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

from compressor.checkpoint import save_classifier
from compressor.data.batches import to_float
from compressor.io import hash_file_into, sha256_file
from compressor.metrics import split_metrics
from compressor.model_files import (
    PROBE_ROWS,
    looks_like_probabilities,
    onnx_from_file,
    registry_from_file,
    weights_arch,
)
from compressor.models import count_parameters
from compressor.models.onnx_teacher import model_file_parts, write_onnx_teacher
from compressor.models.weight_files import ModelFileError
from compressor.pipeline.context import InputFileError, RunContext
from compressor.pipeline.data_stage import subset_indices
from compressor.pipeline.records import TeacherSummary
from compressor.progress import console
from compressor.spec import Spec
from compressor.spec.model_files import PretrainedSpec, TeacherModelSpec


def files_key(paths: list[Path]) -> str:
    """SHA-256 over the named files' contents, an ONNX model's external data files included (a missing file counts
    as ``missing``: its stage then reports it)."""
    digest = hashlib.sha256()
    for path in [part for named in paths for part in model_file_parts(named)]:  # with ONNX external data
        digest.update(str(path).encode() + b"\0")
        if path.is_file():
            hash_file_into(digest, path)
        else:
            digest.update(b"missing")
    return digest.hexdigest()


def teacher_files_key(spec: Spec) -> str:
    """The teachers stage's extra key: the existing teachers' and the pretrained start's files."""
    teachers = spec.teachers
    paths = [m.path for m in teachers.models] + ([teachers.pretrained.path] if teachers.pretrained else [])
    return files_key(paths) if paths else ""


def student_files_key(spec: Spec) -> str:
    """The distillation stage's extra key: the student's pretrained start file."""
    return files_key([spec.student.pretrained.path]) if spec.student.pretrained else ""


def teacher_start(ctx: RunContext, index: int) -> tuple[str, PretrainedSpec | TeacherModelSpec | None]:
    """Architecture and start weights (None: from scratch) of a teacher that the stage trains.

    Raises:
        InputFileError: a fine-tuned teacher's file names no architecture and is not a compressor checkpoint.
    """
    teachers = ctx.spec.teachers
    if not teachers.models:
        return ctx.spec.teacher_archs()[index], teachers.pretrained
    entry = teachers.models[index]
    try:
        return weights_arch(entry.path, entry.arch), entry
    except ModelFileError as exc:
        raise InputFileError(str(exc)) from None


def check_starts(ctx: RunContext, indices: list[int]) -> None:
    """Load every start file of the teachers ``indices`` into its architecture once, so that a bad file fails the
    stage before any teacher trains.

    Raises:
        InputFileError: a file is missing, unreadable or does not fit its architecture.
    """
    seen = set()
    for index in indices:
        arch, start = teacher_start(ctx, index)
        if start is not None and (arch, start.path) not in seen:
            seen.add((arch, start.path))
            ctx.initial_model(arch, ctx.spec.teachers.dropout, start)


def _install_onnx(ctx: RunContext, index: int, entry: TeacherModelSpec):
    """Check the ONNX teacher against the data and write it into the run; return it with its notes."""
    bundle = ctx.bundle()
    info = ctx.model_info("onnx")
    probe = to_float(bundle.train.images[:PROBE_ROWS], "cpu", bundle.train.window)  # as training feeds it
    teacher, settings = onnx_from_file(entry, info, probe)
    notes = [f"input normalisation: {settings['normalization']}"]
    if entry.output == "logits" and not bundle.task.multilabel:
        if looks_like_probabilities(teacher(probe)):
            notes.append("its outputs look like probabilities (rows in [0, 1] summing to 1); if so, set output: "
                         "probabilities")
    write_onnx_teacher(entry.path, ctx.layout.teacher_onnx(index), {**settings, "source": str(entry.path)})
    return teacher, "onnx", teacher.parameter_count, notes


def _install_weights(ctx: RunContext, index: int, entry: TeacherModelSpec):
    """Load the weights into their architecture (strict) and write the checkpoint; return it with its notes."""
    arch = weights_arch(entry.path, entry.arch)
    model, info, notes = registry_from_file(ctx.model_info(arch, ctx.spec.teachers.dropout), entry, entry.path,
                                            exact=True)
    save_classifier(model, info, ctx.layout.teacher_weights(index))
    return model, arch, count_parameters(model), notes


def install_teacher(ctx: RunContext, index: int) -> TeacherSummary:
    """Rank 0: check the existing teacher ``index`` against the data, write it into the run and then its summary.

    Raises:
        InputFileError: the file is missing, not a usable model, or does not fit the data (one line naming it).
    """
    spec, bundle = ctx.spec, ctx.bundle()
    entry = spec.teachers.models[index]
    start = time.perf_counter()
    try:
        install = _install_onnx if entry.is_onnx else _install_weights
        model, arch, params, notes = install(ctx, index, entry)
    except ModelFileError as exc:
        raise InputFileError(str(exc)) from None
    console.print(f"  teacher {index}: {entry.path} ({arch}) used as it is; {'; '.join(notes)}", highlight=False,
                  markup=False)
    subset = subset_indices(ctx)[index]
    record = TeacherSummary(
        key=ctx.current_key, name=f"teacher_{index}", arch=arch, params=params, subset_size=int(len(subset)),
        subset_noise_rate=float(bundle.train.noise_mask[subset].mean()), messy_rate=0.0,
        seconds=round(time.perf_counter() - start, 2), rank=ctx.dist.rank, history={},
        test=split_metrics(model.to(ctx.device).eval(), bundle.test, bundle.task, ctx.device), origin="file",
        source=str(entry.path),
    )
    record.weights_sha256 = sha256_file(ctx.teacher_paths()[index])  # checked before the teacher is kept
    record.write(ctx.layout.teacher_summary(index))
    return record
