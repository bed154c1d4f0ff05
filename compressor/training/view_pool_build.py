"""Building a teacher view pool (``compressor.training.view_pool``): draw the views, run all teachers once, store.

Views. An augmentation of crop padding ``p`` and flips has ``D = (2p + 1)^2 * (2 if flip else 1)`` distinct views of
an image; the pool stores ``min(V, D)`` of them per image, distinct, drawn without replacement from a generator
seeded by the spec's seed (``spec.training.AugmentSpec.distinct_views``), in fixed chunks of images so that the
draw does not depend on the device's batch size. Without augmentation ``D = 1``: one view, the image itself.

Inference. Chunks of images are repeated ``V`` times, cropped and flipped as their views say (the same
``apply_views`` the batch source uses for the student), and every teacher runs on the chunk in one pass
(``TeacherLogits``: evaluation mode, inference mode, channels_last, bfloat16 on CUDA) in the largest chunks that
fit. Outputs go straight into memory-mapped files (the pool never has to fit in memory); each file is written
atomically and ``pool.json`` last.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

import numpy as np
import torch

from compressor.data.batches import apply_views, to_float
from compressor.io import atomic_path, write_json
from compressor.progress import progress_bar
from compressor.spec.training import AugmentSpec
from compressor.training.teacher_inference import first_chunk, in_chunks
from compressor.training.teacher_logits import TeacherLogits
from compressor.training.view_plan import StoredViews
from compressor.training.view_pool import (
    ERROR_TEMPERATURES,
    FLOAT16_MAX,
    LOG_REST,
    LOGITS,
    META,
    POOL_FORMAT,
    TOP_CLASS,
    TOP_K,
    TOP_LOGP,
    VIEWS,
    PoolOverflow,
    ViewPool,
    compress_top_k,
    expand_top_k,
    softened_tv,
)

DRAW_CHUNK = 4096  # images per draw of the views (fixed: the draws must not depend on the inference batch)


def draw_pool_views(n: int, views: int, augment: AugmentSpec, generator: torch.Generator) -> np.ndarray:
    """``int16 [n, min(views, D), 3]``: distinct ``(dy, dx, flip)`` views of each of ``n`` images (see above)."""
    distinct = augment.distinct_views
    v = min(views, distinct)
    side = 2 * augment.crop_padding + 1
    flips = 2 if augment.hflip else 1
    out = np.zeros((n, v, 3), dtype=np.int16)
    for start in range(0, n, DRAW_CHUNK):
        stop = min(n, start + DRAW_CHUNK)
        # a random permutation of the D view codes per image; its first v are that image's views
        codes = torch.rand(stop - start, distinct, generator=generator).argsort(dim=1)[:, :v].numpy()
        flip, place = codes % flips, codes // flips
        out[start:stop, :, 0], out[start:stop, :, 1], out[start:stop, :, 2] = place // side, place % side, flip
    return out


class _Errors:
    """Running mean and maximum of the top-k approximation's total-variation error per temperature."""

    def __init__(self):
        self.total = {t: 0.0 for t in ERROR_TEMPERATURES}
        self.worst = {t: 0.0 for t in ERROR_TEMPERATURES}
        self.rows = 0

    def add(self, exact: torch.Tensor, approx: torch.Tensor) -> None:
        for t in ERROR_TEMPERATURES:
            tv = softened_tv(exact, approx, t)
            self.total[t] += float(tv.sum())
            self.worst[t] = max(self.worst[t], float(tv.max()))
        self.rows += exact[..., 0].numel()

    def record(self) -> dict:
        return {f"{t:g}": {"mean_tv": self.total[t] / max(self.rows, 1), "max_tv": self.worst[t]}
                for t in ERROR_TEMPERATURES}


def build_view_pool(
    directory: str | Path,
    key: str,
    teachers: TeacherLogits,
    images: torch.Tensor,
    augment: AugmentSpec,
    views: int,
    generator: torch.Generator,
    exact: bool,
    window: tuple[float, float] | None = None,
) -> ViewPool:
    """Draw the views, run every teacher over them once, and store the pool in ``directory``.

    Args:
        directory: the pool's folder (created; an older pool there is replaced).
        key: the hash of everything the pool depends on (``pool.json`` records it).
        teachers: the K teachers, prepared for inference.
        images: integer ``[N, C, H, W]`` training images (in memory or a store), in the training split's order.
        augment: the crop padding and flips the views are drawn from.
        views: ``V``, views per image (capped at the augmentation's distinct views).
        generator: source of the views.
        exact: store the logits whole (storage ``logits``) rather than the top-k log-probabilities.
        window: the data set's pixel window (``split.window``; None: the pixel type's range), as training uses it.

    Raises:
        PoolOverflow: storage ``logits`` and a logit does not fit float16 (nothing is trusted then).
    """
    directory = Path(directory)
    (directory / META).unlink(missing_ok=True)  # the key is written last: no key, no trusted pool
    start_time = time.perf_counter()
    device = teachers.device
    n = len(images)
    stored = draw_pool_views(n, views, augment, generator)
    plan = StoredViews(stored, augment.crop_padding > 0, augment.hflip)
    v = plan.views
    k = len(teachers)
    classes = int(teachers(to_float(images[:1], device, window)).shape[-1])
    storage = "logits" if exact else "top_k"
    top = min(TOP_K, classes - 1)
    shapes = ({LOGITS: (n, v, k, classes)} if exact else
              {TOP_LOGP: (n, v, k, top), TOP_CLASS: (n, v, k, top), LOG_REST: (n, v, k)})
    dtypes = {name: np.float16 for name in shapes}
    if not exact:
        dtypes[TOP_CLASS] = np.int16 if classes <= np.iinfo(np.int16).max else np.int32
    errors = _Errors()
    images_per_chunk = max(1, first_chunk(device) // v)

    with contextlib.ExitStack() as stack, progress_bar(f"view pool ({v} views x {k} teachers)", n) as bar:
        tmp = {name: stack.enter_context(atomic_path(directory / name)) for name in [VIEWS, *shapes]}
        with open(tmp[VIEWS], "wb") as handle:  # (np.save would add ".npy" to a path)
            np.save(handle, stored)
        out = {name: np.lib.format.open_memmap(tmp[name], mode="w+", dtype=dtypes[name], shape=shape)
               for name, shape in shapes.items()}

        def run(lo: int, hi: int) -> None:
            x = to_float(images[lo:hi], device, window).repeat_interleave(v, dim=0)
            # image-major: row i * V + j of the chunk is view j of image lo + i
            chunk_views = plan.pick(np.repeat(np.arange(lo, hi), v), torch.arange(v).repeat(hi - lo))
            x = apply_views(x, augment.crop_padding, chunk_views)
            logits = teachers(x)  # [K, m * V, C] float32
            logits = logits.view(k, hi - lo, v, classes).permute(1, 2, 0, 3).cpu()  # [m, V, K, C]
            if exact:
                if not torch.isfinite(logits).all() or logits.abs().max() > FLOAT16_MAX:
                    raise PoolOverflow(f"a teacher has logits outside the float16 range (|z| > {FLOAT16_MAX:g} or "
                                       "not finite); its outputs cannot be stored")
                out[LOGITS][lo:hi] = logits.half().numpy()
            else:
                top_logp, top_class, log_rest = compress_top_k(logits, top)
                top_logp, log_rest = top_logp.clamp_min(-FLOAT16_MAX).half(), log_rest.clamp_min(-FLOAT16_MAX).half()
                out[TOP_LOGP][lo:hi], out[LOG_REST][lo:hi] = top_logp.numpy(), log_rest.numpy()
                out[TOP_CLASS][lo:hi] = top_class.numpy().astype(dtypes[TOP_CLASS])
                errors.add(logits, expand_top_k(top_logp, top_class, log_rest, classes))
            bar.advance(hi - lo)

        in_chunks(n, images_per_chunk, run)
        for array in out.values():
            array.flush()
        out.clear()  # unmap the files before they are renamed into place
    all_shapes = {VIEWS: list(stored.shape), **{name: list(shape) for name, shape in shapes.items()}}
    all_dtypes = {VIEWS: "int16", **{name: np.dtype(dtype).name for name, dtype in dtypes.items()}}
    meta = {"format": POOL_FORMAT, "key": key, "images": n, "views": v, "teachers": k, "classes": classes,
            "storage": storage, "top_k": None if exact else top, "crop_padding": augment.crop_padding,
            "hflip": augment.hflip, "shapes": all_shapes, "dtypes": all_dtypes,
            "build_seconds": round(time.perf_counter() - start_time, 3), "device": device.type,
            "top_k_error": None if exact else errors.record()}
    write_json(directory / META, meta)
    pool = ViewPool.open(directory, key)
    if pool is None:
        raise OSError(f"the view pool in {directory} could not be read back")
    return pool
