"""The run's teacher view pool: whether distillation reads one, its key, where it is found, built and shared.

``distillation.view_pool`` (``compressor.spec.training.DistillSpec.pool_views``): ``auto`` (default) pools 8 views
per image wherever valid, ``N`` pools N views (a spec that cannot use a pool is rejected), ``0`` runs the teachers
on every batch. Valid = the student learns from teachers and no teacher changes its output per step (no fickle
teachers); under ``auto`` a spec with fickle teachers runs them live, with a note. The views are capped at the
augmentation's distinct views, so without augmentation the pool is the teachers' logits of every image (one view).

Storage: the logits whole when there are at most ``EXACT_MAX_CLASSES`` classes, when the outputs are multi-label
(independent per class: nothing to cut) or when teacher noise perturbs every logit (``teacher_noise.logit_noise``,
``swap``); the top-k log-probabilities and the remaining mass otherwise (``compressor.training.view_pool``).

The key covers everything the stored outputs depend on: the pool format, the teachers' weight files (SHA-256), the
data stage's key (training images and their order), the device type (CUDA runs in bfloat16), the number of views,
the augmentation (crop padding, flip), the seed and the storage. The pool is looked for, in order, in the run
directory (``RUN/.compressor/cache/view_pool/``) and in the user cache (``$COMPRESSOR_CACHE_DIR``, default
``$XDG_CACHE_HOME/compressor`` or ``~/.cache/compressor``; an empty value turns it off), under
``view_pools/<key>/``. When neither has it, rank 0 builds it in the run directory and publishes it to the user cache
(hard links where the file system allows, copies otherwise), so a run in another directory with the same teachers
and data reads it instead of computing it again. Pools in the user cache may be deleted at any time.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path

from compressor.io import hash_file_into
from compressor.models.onnx_teacher import model_file_parts
from compressor.pipeline.context import RunContext, StageError
from compressor.progress import console
from compressor.seeding import generator
from compressor.spec.training import DistillSpec
from compressor.task import Task
from compressor.training.teacher_logits import TeacherLogits
from compressor.training.view_pool import EXACT_MAX_CLASSES, FILES, META, POOL_FORMAT, PoolOverflow, ViewPool
from compressor.training.view_pool_build import build_view_pool

CACHE_VARIABLE = "COMPRESSOR_CACHE_DIR"


def user_cache_dir() -> Path | None:
    """The user-level cache folder shared by run directories (None when ``$COMPRESSOR_CACHE_DIR`` is empty)."""
    value = os.environ.get(CACHE_VARIABLE)
    if value is not None:
        return Path(value).expanduser() if value.strip() else None
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "compressor"


def exact_storage(distill: DistillSpec, task: Task, num_classes: int) -> bool:
    """Whether the pool stores the logits whole (see the module docstring) rather than their top k."""
    noise = distill.teacher_noise
    return task.multilabel or num_classes <= EXACT_MAX_CLASSES or noise.logit_noise > 0 or noise.swap != "none"


def pool_key(ctx: RunContext, views: int, exact: bool) -> str:
    """Hash of everything the pool's contents depend on (see the module docstring)."""
    augment = ctx.spec.distillation.training.augment
    digest = hashlib.sha256(
        f"format={POOL_FORMAT}:data={ctx.keys.get('data', '')}:device={ctx.device.type}:views={views}:"
        f"crop={augment.crop_padding}:flip={augment.hflip}:seed={ctx.spec.seed}:exact={exact}".encode())
    for path in ctx.teacher_paths():
        for part in model_file_parts(path):  # an installed ONNX teacher may keep its weights in <name>.onnx.data
            hash_file_into(digest, part)
    return digest.hexdigest()


def publish(pool: ViewPool, root: Path) -> Path:
    """Put ``pool`` into the user cache ``root`` under its key (hard links or copies, ``pool.json`` last)."""
    target = root / "view_pools" / pool.meta["key"]
    if ViewPool.open(target, pool.meta["key"]) is not None:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        for name in [*FILES[pool.storage], META]:
            try:
                os.link(pool.directory / name, staging / name)
            except OSError:  # another file system, or links not allowed
                shutil.copyfile(pool.directory / name, staging / name)
        shutil.rmtree(target, ignore_errors=True)  # an incomplete or stale copy under the same key
        os.rename(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def find_or_build(ctx: RunContext, teachers: TeacherLogits, views: int, exact: bool) -> tuple[str, str, str]:
    """Rank 0: the folder of the pool from the run directory or the user cache, else built now; with where it came
    from and its key."""
    key = pool_key(ctx, views, exact)
    here, shared = ctx.layout.view_pool, user_cache_dir()
    if ViewPool.open(here, key) is not None:
        return str(here), "run directory", key
    if shared is not None and ViewPool.open(shared / "view_pools" / key, key) is not None:
        return str(shared / "view_pools" / key), "user cache", key
    spec = ctx.spec
    train = ctx.bundle().train
    pool = build_view_pool(here, key, teachers, train.images, spec.distillation.training.augment,
                           views, generator(spec.seed, "view_pool"), exact, window=train.window)
    if shared is not None:
        try:
            publish(pool, shared)
        except OSError as exc:
            console.print(f"[yellow]  view pool not shared in {shared} ({exc})[/yellow]", highlight=False)
    return str(pool.directory), "built", key


def open_view_pool(ctx: RunContext, teachers: TeacherLogits) -> tuple[ViewPool | None, dict | None]:
    """The view pool this run's distillation reads, and a summary of it; ``(None, None)`` to run teachers live.

    Raises:
        StageError: the spec asks for a pool (``view_pool: N``) but a logit does not fit float16.
    """
    distill = ctx.spec.distillation
    views = distill.pool_views
    if views == 0:
        if distill.uses_teachers and distill.view_pool == "auto" and ctx.dist.is_main:
            reasons = "; ".join(distill.view_pool_blockers())
            console.print(f"  the teachers run live on every batch (no view pool: {reasons})", highlight=False)
        return None, None
    bundle = ctx.bundle()
    exact = exact_storage(distill, bundle.task, bundle.num_classes)
    try:  # the other ranks wait here for the pool
        directory, origin, key = ctx.on_main("the view pool", find_or_build, ctx, teachers, views, exact,
                                             errors=(PoolOverflow,))
    except PoolOverflow as exc:
        if distill.view_pool != "auto":
            raise StageError(f"distillation.view_pool is {distill.view_pool} but {exc}") from None
        if ctx.dist.is_main:
            console.print(f"[yellow]  no view pool ({exc}); the teachers run live on every batch[/yellow]",
                          highlight=False)
        return None, None
    pool = ViewPool.open(directory, key)
    if pool is None or pool.shape[:3] != (len(bundle.train), views, len(teachers)):
        raise StageError(f"the view pool in {directory} could not be read back")
    summary = {"views": pool.views, "storage": pool.storage, "top_k": pool.meta["top_k"], "origin": origin,
               "build_seconds": pool.meta["build_seconds"], "bytes": pool.nbytes,
               "top_k_error": pool.meta["top_k_error"]}
    if ctx.dist.is_main:
        console.print(f"  view pool: {pool.views} views x {pool.teachers} teachers, {pool.storage} "
                      f"({pool.nbytes / 2**20:.1f} MiB, {origin})", highlight=False)
    return pool, summary
