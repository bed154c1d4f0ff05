"""Image stores: ``[N, C, H, W]`` integer pixels read on demand, behind the interface of an in-memory tensor.

A split's ``images`` is either a ``torch.Tensor`` held in memory or a ``LazyStore``: a memory-mapped array
(``ArrayStore``) or a list of image files (``FileStore``), decoded, converted and resized per item by
``compressor.export.decode`` -- the same code that ``predict`` and ``serve`` run. Both answer ``len(images)``,
``images.shape``, ``images.dtype`` and ``images[index]`` (an int, slice, index tensor or array) with a tensor of
the pixels' integer type, so a training loop reads either the same way. A ``LazyStore`` pickles without its pixels,
so ``DataLoader`` worker processes (``compressor.data.loader``) reopen the memory map or read the files themselves.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Union

import numpy as np
import torch

from compressor.data.errors import DataError
from compressor.export.decode import DecodeError, conform, decode_file, read_bytes

ImageStore = Union[torch.Tensor, "LazyStore"]  # noqa: UP007 - a string forward reference needs Union
TORCH_DTYPES = {"uint8": torch.uint8, "uint16": torch.uint16, "float32": torch.float32}
FETCH_BATCH = 256  # images per read when a whole store is materialised or scanned


def index_array(index: object, count: int) -> np.ndarray:
    """An index (int, slice, index/bool tensor or array, list) as a non-negative ``int64`` array.

    Raises:
        IndexError: an index outside ``range(count)``.
    """
    if isinstance(index, slice):
        return np.arange(count, dtype=np.int64)[index]
    if isinstance(index, torch.Tensor):
        index = index.cpu().numpy()
    array = np.asarray(index)
    if array.dtype == np.bool_:
        if array.shape != (count,):
            raise IndexError(f"boolean index of shape {array.shape} for {count} images")
        return np.flatnonzero(array)
    array = array.astype(np.int64, copy=False).reshape(-1)
    if array.size and (array.min() < -count or array.max() >= count):
        raise IndexError(f"index out of range for {count} images")
    return np.where(array < 0, array + count, array)


class LazyStore:
    """Pixels read on demand; subclasses implement ``_rows(index) -> [n, H, W, C]`` numpy pixels.

    Args:
        count: number of images.
        channels, height, width: the shape of every image as served (after conversion and resizing).
        dtype: ``uint8``, ``uint16`` or ``float32``.

    Attributes:
        shape: ``(N, C, H, W)``.
        workers: ``DataLoader`` worker processes that read the store in passes over it (evaluation, statistics);
            set from ``data.workers`` when the data set is loaded, inherited by subsets.
    """

    workers: int = 0

    def __init__(self, count: int, channels: int, height: int, width: int, dtype: str):
        self.shape = torch.Size((int(count), int(channels), int(height), int(width)))
        self.pixel_dtype = dtype

    @property
    def dtype(self) -> torch.dtype:
        """The torch dtype of the served pixels."""
        return TORCH_DTYPES[self.pixel_dtype]

    @property
    def nbytes(self) -> int:
        """Bytes the whole store would take in memory."""
        return int(np.prod(self.shape)) * np.dtype(self.pixel_dtype).itemsize

    def __len__(self) -> int:
        return int(self.shape[0])

    @property
    def needs_check(self) -> bool:
        """Whether reading can fail (files to decode, floats or foreign integers to check): the data stage then
        reads every image once up front."""
        return True

    def _rows(self, index: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def fetch(self, index: np.ndarray) -> torch.Tensor:
        """The images ``index`` (non-negative ``int64``) as a ``[n, C, H, W]`` tensor."""
        if index.size == 0:
            return torch.empty((0, *self.shape[1:]), dtype=self.dtype)
        rows = self._rows(index)
        return torch.from_numpy(np.ascontiguousarray(rows.transpose(0, 3, 1, 2)))

    def __getitem__(self, index: object) -> torch.Tensor:
        if isinstance(index, (int, np.integer)):
            return self.fetch(index_array([index], len(self)))[0]
        return self.fetch(index_array(index, len(self)))

    def subset(self, index: np.ndarray) -> LazyStore:
        """A view of the images ``index`` (nothing is read)."""
        return SubsetStore(self, index_array(index, len(self)))


class SubsetStore(LazyStore):
    """The rows ``index`` of another store."""

    def __init__(self, base: LazyStore, index: np.ndarray):
        if isinstance(base, SubsetStore):  # a subset of a subset indexes the original store directly
            base, index = base.base, base.index[index]
        super().__init__(len(index), *base.shape[1:], base.pixel_dtype)
        self.base, self.index, self.workers = base, index, base.workers

    @property
    def needs_check(self) -> bool:
        return self.base.needs_check

    def _rows(self, index: np.ndarray) -> np.ndarray:
        return self.base._rows(self.index[index])


@dataclass(frozen=True)
class MappedArray:
    """Where a ``.npy`` array lies in a file (its data offset, dtype, shape): reopened as a read-only memory map."""

    path: str
    offset: int
    dtype: str
    shape: tuple[int, ...]
    fortran_order: bool = False

    def open(self) -> np.ndarray:
        """The read-only memory map (nothing is read until indexed)."""
        return np.memmap(self.path, dtype=np.dtype(self.dtype), mode="r", offset=self.offset, shape=self.shape,
                         order="F" if self.fortran_order else "C")


class ArrayStore(LazyStore):
    """An ``N x H x W`` or ``N x H x W x C`` array (in memory or memory-mapped), checked, cast and resized per read.

    Args:
        array: the source pixels; any real dtype (floats must be finite; other integer types must fit ``dtype``).
        name: how errors name it (``file:key``).
        channels: channels to serve (None: the array's, alpha dropped).
        size: side to resize to (None: the array's own, which must then be square).
        dtype: the served pixel type.
        mapped: where ``array`` is memory-mapped from: pickling then carries this instead of the pixels.
    """

    def __init__(self, array: np.ndarray, name: str, channels: int | None, size: int | None, dtype: str,
                 mapped: MappedArray | None = None):
        _, height, width, have = (*array.shape, 1) if array.ndim == 3 else array.shape
        have = have - 1 if have in (2, 4) else have
        super().__init__(array.shape[0], channels or have, size or height, size or width, dtype)
        self.name, self._array, self.mapped = name, array, mapped
        self._convert = (channels not in (None, have)) or (size is not None and (height, width) != (size, size))

    @property
    def array(self) -> np.ndarray:
        """The source array (the memory map is reopened after unpickling)."""
        if self._array is None:
            self._array = self.mapped.open()
        return self._array

    @property
    def needs_check(self) -> bool:
        """A memory-mapped uint8/uint16 array whose CRC was checked holds nothing that can fail."""
        return self.array.dtype != np.dtype(self.pixel_dtype) or self.pixel_dtype == "float32"

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        if self.mapped is not None:
            state["_array"] = None  # a worker process maps the file itself instead of receiving a copy
        return state

    def check(self, raw: np.ndarray, index: np.ndarray) -> None:
        """Refuse non-finite floats and integers outside the served type, naming the first image at fault."""
        if raw.dtype.kind == "f":
            finite = np.isfinite(raw.reshape(len(raw), -1)).all(axis=1)
            if not finite.all():
                at = int(index[np.flatnonzero(~finite)[0]])
                raise DataError(f"{self.name}[{at}]: image contains NaN or infinite pixels")
        elif raw.dtype != np.dtype(self.pixel_dtype) and raw.size and self.pixel_dtype != "float32":
            top = np.iinfo(self.pixel_dtype).max
            flat = raw.reshape(len(raw), -1)
            bad = (flat.min(axis=1) < 0) | (flat.max(axis=1) > top)
            if bad.any():
                at = int(index[np.flatnonzero(bad)[0]])
                raise DataError(f"{self.name}[{at}]: pixel values outside 0..{top}")

    def _rows(self, index: np.ndarray) -> np.ndarray:
        order = np.argsort(index, kind="stable")  # ascending reads are sequential in the memory map
        raw = np.asarray(self.array[index[order]])
        raw = raw[np.argsort(order, kind="stable")]
        self.check(raw, index)
        rows = raw.astype(self.pixel_dtype, copy=False)
        rows = rows[..., None] if rows.ndim == 3 else rows
        if not self._convert and rows.shape[-1] not in (2, 4):
            return rows
        _, channels, height, _ = self.shape
        return np.stack([conform(row, channels, height, f"{self.name}[{i}]") for row, i in zip(rows, index,
                                                                                                  strict=True)])


class FileStore(LazyStore):
    """Image files decoded per read (``compressor.export.decode``: the decoding ``predict`` and ``serve`` use).

    Args:
        paths: one file per image.
        channels, size: the served shape (every file is converted and resized to it).
        dtype: the data set's pixel type; a file of another type is refused (never silently rescaled).
    """

    def __init__(self, paths: Sequence[str | Path], channels: int, size: int, dtype: str):
        super().__init__(len(paths), channels, size, size, dtype)
        self.paths = [str(p) for p in paths]

    def _read(self, path: str) -> np.ndarray:
        try:
            pixels = decode_file(read_bytes(Path(path)), path)
        except DecodeError as exc:
            raise DataError(str(exc)) from None
        if pixels.dtype != np.dtype(self.pixel_dtype):
            raise DataError(f"{path}: {pixels.dtype} pixels in a data set of {self.pixel_dtype} images "
                            "(mixed bit depths; convert the files to one)")
        _, channels, size, _ = self.shape
        return conform(pixels, channels, size, path)

    def _rows(self, index: np.ndarray) -> np.ndarray:
        return np.stack([self._read(self.paths[i]) for i in index])


def take(images: ImageStore, index: np.ndarray) -> ImageStore:
    """The rows ``index`` of a tensor (a copy) or a store (a view)."""
    if isinstance(images, LazyStore):
        return images.subset(index)
    return images[torch.as_tensor(np.asarray(index), dtype=torch.long)]


def materialize(images: ImageStore) -> torch.Tensor:
    """A store read whole into a tensor, ``FETCH_BATCH`` images at a time (a tensor is returned as it is)."""
    if not isinstance(images, LazyStore):
        return images
    out = torch.empty(tuple(images.shape), dtype=images.dtype)
    for start in range(0, len(images), FETCH_BATCH):
        stop = min(start + FETCH_BATCH, len(images))
        out[start:stop] = images.fetch(np.arange(start, stop, dtype=np.int64))
    return out
