"""The run's teacher-logit cache: when distillation reads it, and where it lives.

``distillation.cache_teacher_logits``: ``auto`` (default) uses the cache whenever it is valid, ``on`` insists (the
spec is rejected when it is not valid), ``off`` runs the teachers on every batch. Valid = the teachers are
deterministic for the distillation inputs: no fickle teachers (dropout active while distilling) and no
distillation-time augmentation (crop / flip change the teachers' input every epoch). Logit noise, swapping,
teacher weights, messy collaboration and soft-randomization act after the teachers or on the student's input only,
so they keep working on cached logits.

The cache is ``.compressor/cache/teacher_logits.npy`` (``[K, N, C]`` float16, memory-mapped) with its key file
written last. The key covers the teachers' weight files (their SHA-256), the data stage's key (which fixes the
training images and their order) and the device type; it is kept after the run, so re-running distillation with
other settings and the same teachers reuses it. Rank 0 builds it; the other ranks wait and map the same file.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import torch

from compressor import distributed
from compressor.io import hash_file_into
from compressor.models.onnx_teacher import model_file_parts
from compressor.pipeline.context import RunContext, StageError
from compressor.progress import console
from compressor.training.logit_cache import CacheOverflow, TeacherLogitCache

CACHE_FORMAT = 1  # bump when the cache layout changes


def cache_key(ctx: RunContext) -> str:
    """Hash of everything the cached logits depend on: teacher weights, training images, device type."""
    digest = hashlib.sha256(f"format={CACHE_FORMAT}:data={ctx.keys.get('data', '')}:{ctx.device.type}".encode())
    for path in ctx.teacher_paths():
        for part in model_file_parts(path):  # an installed ONNX teacher may keep its weights in <name>.onnx.data
            hash_file_into(digest, part)
    return digest.hexdigest()


def open_teacher_cache(ctx: RunContext, teachers: Sequence[torch.nn.Module]) -> TeacherLogitCache | None:
    """The teacher-logit cache for this run's distillation, built when missing or stale; None when not used.

    Raises:
        StageError: ``cache_teacher_logits: on`` but a logit does not fit float16.
    """
    distill = ctx.spec.distillation
    if not distill.uses_logit_cache:
        return None
    path, key = ctx.layout.teacher_logit_cache, cache_key(ctx)
    problem = None
    if ctx.dist.is_main and TeacherLogitCache.open(path, key) is None:
        try:
            TeacherLogitCache.build(path, key, teachers, ctx.bundle().train.images, ctx.device)
        except CacheOverflow as exc:
            problem = str(exc)
    problem = distributed.broadcast_object(problem)  # also: the other ranks wait here until the cache exists
    if problem is not None:
        if distill.cache_teacher_logits == "on":
            raise StageError(f"distillation.cache_teacher_logits is 'on' but {problem}")
        if ctx.dist.is_main:
            console.print(f"[yellow]  teacher logits not cached ({problem}); running the teachers per batch[/yellow]",
                          highlight=False)
        return None
    cache = TeacherLogitCache.open(path, key)
    if cache is None or cache.shape[:2] != (len(teachers), len(ctx.bundle().train)):
        raise StageError(f"the teacher-logit cache {path} could not be read back")
    return cache
