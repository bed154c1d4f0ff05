"""Data sources: built-in digits, MedMNIST-layout ``.npz`` (or ``.npy`` folder), image folder, CSV manifest.

Each loader returns a ``RawData``: either the source's own train/val/test splits, or one pool to be split. Images
stay where they are (memory-mapped arrays, files decoded on demand) until ``prepare_data`` decides what to hold in
memory. Nothing is ever downloaded.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from compressor.data.errors import DataError
from compressor.data.stores import ArrayStore, materialize
from compressor.data.types import Split
from compressor.spec.data import DataSpec

SPLITS = ("train", "val", "test")
MIN_IMAGE_SIZE = 4  # the smallest side any registered architecture accepts (densenet121 needs 8)


@dataclass
class RawData:
    """What a source provides: ``splits`` (train/val/test) or ``pool`` (to be split), labels and class names.

    ``where`` names each split's labels for messages (``file:key``); ``name`` names the data set.
    """

    splits: dict[str, Split] | None
    pool: Split | None
    class_names: list[str] | None
    multilabel: bool
    name: str = "data"
    where: dict[str, str] = field(default_factory=dict)


def image_side(height: int, width: int, size: int | None, where: str) -> int:
    """The square side images are served at: ``data.image_size``, else their own side when they are square.

    Raises:
        DataError: non-square images without ``data.image_size``, or images below the models' minimum size.
    """
    if size is None:
        if height != width:
            raise DataError(f"{where}: images are {height}x{width} (height x width); set data.image_size to resize "
                            "them square")
        size = height
    if size < MIN_IMAGE_SIZE:
        raise DataError(f"{where}: images are {height}x{width} pixels; the models need at least "
                        f"{MIN_IMAGE_SIZE}x{MIN_IMAGE_SIZE} (set data.image_size to resize them)")
    return size


def load_digits_source(spec: DataSpec) -> RawData:
    """scikit-learn's bundled 8x8 handwritten digits (1797 images, 10 classes, pixel values 0-16)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    pixels = np.rint(digits.images * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)
    images = materialize(ArrayStore(pixels, "digits", spec.channels, spec.image_size, "uint8"))
    labels = digits.target.astype(np.int64)
    return RawData(None, Split(images, labels), [str(i) for i in range(10)], multilabel=False, name="digits",
                   where={s: f"digits:{s}" for s in SPLITS})


def load_source(spec: DataSpec) -> RawData:
    """Dispatch on ``spec.source``.

    Raises:
        DataError: the data cannot be read.
    """
    if spec.source == "digits":
        return load_digits_source(spec)
    path = Path(spec.path).expanduser()
    if spec.source == "npz":
        from compressor.data.npz_source import load_npz_source

        return load_npz_source(path, spec)
    from compressor.data.file_sources import load_csv_source, load_folder_source

    if spec.source == "folder":
        return load_folder_source(path, spec)
    return load_csv_source(path, spec)
