"""Arrays of an ``.npz`` file (or a folder of ``.npy`` files) without reading them into memory.

``np.load(..., mmap_mode="r")`` ignores ``mmap_mode`` for ``.npz`` files, so members are located by hand: an
uncompressed (``np.savez``) member is a ``.npy`` file stored verbatim inside the zip, so its pixels start at the
member's local-header offset + 30 + name and extra-field lengths + the ``.npy`` header, and can be memory-mapped
from there. Every uncompressed member's CRC-32 is checked in one streaming pass when it is opened (a damaged file is
refused before training, not a corrupt batch later). A compressed member (``np.savez_compressed``) cannot be
mapped: it is decompressed into memory when it is small, and refused with advice otherwise.
"""

from __future__ import annotations

import struct
import zipfile
from pathlib import Path

import numpy as np

from compressor.data.errors import DataError
from compressor.data.stores import MappedArray

COMPRESSED_LIMIT = 512 << 20  # largest compressed member decompressed into memory (bytes, uncompressed)
CRC_CHUNK = 16 << 20
_LOCAL_HEADER = struct.Struct("<4s22xHH")  # signature, then the file-name and extra-field lengths at bytes 26-29


def _check_dtype(dtype: np.dtype, where: str) -> None:
    if dtype.hasobject:
        raise DataError(f"{where}: an object array (pickled Python objects are never loaded); save numbers")
    if dtype.kind not in "biuf" and where.endswith(("_images", "_labels", "_groups")):
        raise DataError(f"{where}: {dtype} values; images, labels and groups must be numbers")


def _read_npy_header(handle, where: str) -> tuple[tuple[int, ...], bool, np.dtype]:
    try:
        version = np.lib.format.read_magic(handle)
        reader = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = reader(handle)
    except (ValueError, OSError, EOFError, SyntaxError) as exc:
        raise DataError(f"{where}: not a readable .npy array ({exc})") from None
    _check_dtype(dtype, where)
    return tuple(int(n) for n in shape), bool(fortran), dtype


class NpzArrays:
    """Named arrays of an ``.npz`` file or a folder of ``.npy`` files, memory-mapped where possible.

    Args:
        path: the ``.npz`` file, or a folder holding ``<key>.npy`` files.

    Raises:
        DataError: not a readable archive or folder.
    """

    def __init__(self, path: Path):
        self.path = path
        self._members: dict[str, zipfile.ZipInfo] = {}
        if path.is_dir():
            self.keys = sorted(p.stem for p in path.glob("*.npy") if p.is_file())
            return
        try:
            with zipfile.ZipFile(path) as archive:
                infos = archive.infolist()
        except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
            raise DataError(f"{path}: not a readable .npz file ({exc})") from None
        self._members = {i.filename.removesuffix(".npy"): i for i in infos if i.filename.endswith(".npy")}
        self.keys = sorted(self._members)

    def where(self, key: str) -> str:
        """``file:key`` for messages."""
        return f"{self.path}:{key}"

    def array(self, key: str, mmap: bool = True) -> tuple[np.ndarray, MappedArray | None]:
        """The array ``key``: a read-only memory map (and where it lies) when possible, else read into memory.

        Raises:
            DataError: a damaged member (CRC error, truncated), an object or string array where numbers are
                needed, or a compressed member too large to decompress into memory.
        """
        where = self.where(key)
        if self.path.is_dir():
            return self._npy_file(self.path / f"{key}.npy", where, mmap)
        info = self._members[key]
        if info.flag_bits & 0x1:
            raise DataError(f"{where}: encrypted zip members are not supported")
        if info.compress_type == zipfile.ZIP_STORED and mmap:
            return self._mapped_member(info, where)
        if info.file_size > COMPRESSED_LIMIT:
            raise DataError(
                f"{where}: a compressed member of {info.file_size / 2**30:.1f} GiB cannot be memory-mapped; re-save "
                "the arrays uncompressed (np.savez, not np.savez_compressed) or as a folder of .npy files")
        try:
            with zipfile.ZipFile(self.path) as archive, archive.open(info) as handle:
                shape, fortran, dtype = _read_npy_header(handle, where)
                count = int(np.prod(shape))
                data = handle.read(count * dtype.itemsize)
                handle.read()  # to the end: zipfile checks the CRC-32 there
        except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
            raise DataError(f"{where}: damaged .npz member ({exc})") from None
        if len(data) != count * dtype.itemsize:
            raise DataError(f"{where}: truncated .npz member ({len(data)} of {count * dtype.itemsize} bytes)")
        array = np.frombuffer(data, dtype=dtype, count=count)
        return array.reshape(shape[::-1]).transpose() if fortran else array.reshape(shape), None

    def _npy_file(self, path: Path, where: str, mmap: bool) -> tuple[np.ndarray, MappedArray | None]:
        try:
            with open(path, "rb") as handle:
                shape, fortran, dtype = _read_npy_header(handle, where)
                offset = handle.tell()
            size = path.stat().st_size
        except OSError as exc:
            raise DataError(f"{where}: cannot read ({exc.strerror})") from None
        needed = offset + int(np.prod(shape)) * dtype.itemsize
        if size < needed:
            raise DataError(f"{where}: truncated .npy file ({size} of {needed} bytes)")
        mapped = MappedArray(str(path), offset, dtype.str, shape, fortran)
        array = mapped.open() if mmap and np.prod(shape) > 0 else np.load(path, allow_pickle=False)
        return array, mapped if mmap and np.prod(shape) > 0 else None

    def _mapped_member(self, info: zipfile.ZipInfo, where: str) -> tuple[np.ndarray, MappedArray | None]:
        try:
            with zipfile.ZipFile(self.path) as archive, archive.open(info) as handle:
                while handle.read(CRC_CHUNK):  # zipfile raises BadZipFile at the end when the CRC-32 differs
                    pass
            with open(self.path, "rb") as raw:
                raw.seek(info.header_offset)
                signature, name_length, extra_length = _LOCAL_HEADER.unpack(raw.read(_LOCAL_HEADER.size))
                if signature != b"PK\x03\x04":
                    raise DataError(f"{where}: damaged .npz member (bad local header)")
                start = info.header_offset + _LOCAL_HEADER.size + name_length + extra_length
                raw.seek(start)
                shape, fortran, dtype = _read_npy_header(raw, where)
                offset = raw.tell()
        except (zipfile.BadZipFile, OSError, EOFError, struct.error) as exc:
            raise DataError(f"{where}: damaged .npz member ({exc})") from None
        if offset - start + int(np.prod(shape)) * dtype.itemsize != info.file_size:
            raise DataError(f"{where}: damaged .npz member (its size does not match its .npy header)")
        if np.prod(shape) == 0:
            return np.zeros(shape, dtype=dtype), None
        mapped = MappedArray(str(self.path), offset, dtype.str, shape, fortran)
        return mapped.open(), mapped


def write_npz_chunks(path: Path, members: dict[str, tuple[tuple[int, ...], str, object]]) -> None:
    """Write an uncompressed ``.npz`` whose arrays arrive in chunks along their first axis (never whole in memory).

    The result is what ``np.savez`` writes (``np.load`` reads it) and what ``NpzArrays`` memory-maps.

    Args:
        path: the file to write.
        members: key -> ``(shape, dtype, chunks)``; ``chunks`` yields arrays of ``shape[1:]`` rows, ``shape[0]`` rows
            in all.

    Raises:
        ValueError: the chunks do not add up to ``shape``.
    """
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED, allowZip64=True) as archive:
        for key, (shape, dtype, chunks) in members.items():
            dtype = np.dtype(dtype)
            with archive.open(f"{key}.npy", "w", force_zip64=True) as handle:
                header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": tuple(shape)}
                np.lib.format.write_array_header_1_0(handle, header)
                rows = 0
                for chunk in chunks:
                    chunk = np.ascontiguousarray(chunk, dtype=dtype)
                    if chunk.shape[1:] != tuple(shape[1:]):
                        raise ValueError(f"{key}: chunk of shape {chunk.shape} for an array of shape {shape}")
                    handle.write(memoryview(chunk.reshape(-1)).cast("B"))
                    rows += len(chunk)
                if rows != shape[0]:
                    raise ValueError(f"{key}: {rows} rows written for an array of shape {shape}")
