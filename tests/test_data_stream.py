"""Out-of-core data: memory-mapped ``.npz`` members and ``.npy`` folders, lazily decoded files, batches through a
``DataLoader`` with worker processes, and statistics in one streaming pass."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from compressor.data import DataError, pixel_batches, prepare_data
from compressor.data import npz as npz_module
from compressor.data import prepare as prepare_module
from compressor.data.file_sources import file_store
from compressor.data.npz import NpzArrays, write_npz_chunks
from compressor.data.stores import ArrayStore, FileStore, LazyStore, SubsetStore
from compressor.spec import parse_spec
from tests.synthetic import class_images, write_folder, write_npz


def bundle_for(**data):
    return prepare_data(parse_spec({"data": data}))


def chunks_of(array: np.ndarray, rows: int = 7):
    return (array[i : i + rows] for i in range(0, len(array), rows))


def chunked_npz(path, sizes=(60, 20, 20), size=10, channels=3, seed=0):
    """An uncompressed npz written chunk by chunk; returns the arrays it holds."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, n in zip(("train", "val", "test"), sizes, strict=True):
        labels = rng.integers(0, 3, n)
        arrays[f"{split}_images"] = class_images(labels, size, channels, seed=n)
        arrays[f"{split}_labels"] = labels[:, None].astype(np.uint8)
    members = {key: (value.shape, value.dtype, chunks_of(value)) for key, value in arrays.items()}
    write_npz_chunks(path, members)
    return arrays


def test_chunked_npz_is_a_normal_npz_and_is_memory_mapped(tmp_path):
    arrays = chunked_npz(tmp_path / "c.npz")
    with np.load(tmp_path / "c.npz") as loaded:
        for key, value in arrays.items():
            np.testing.assert_array_equal(loaded[key], value)
    archive = NpzArrays(tmp_path / "c.npz")
    images, mapped = archive.array("train_images")
    assert isinstance(images, np.memmap) and mapped is not None
    np.testing.assert_array_equal(images, arrays["train_images"])


def test_streamed_npz_serves_the_same_pixels_and_pickles_without_them(tmp_path):
    arrays = chunked_npz(tmp_path / "c.npz")
    streamed = bundle_for(source="npz", path=str(tmp_path / "c.npz"), load="stream")
    held = bundle_for(source="npz", path=str(tmp_path / "c.npz"), load="memory")
    store = streamed.train.images
    assert isinstance(store, ArrayStore) and isinstance(held.train.images, torch.Tensor)
    assert store.dtype == torch.uint8 and tuple(store.shape) == (60, 3, 10, 10)
    expected = torch.from_numpy(arrays["train_images"]).permute(0, 3, 1, 2)
    idx = torch.tensor([5, 0, 59, 5])
    assert torch.equal(store[idx], expected[idx]) and torch.equal(store[3], expected[3])
    assert torch.equal(store[10:20], expected[10:20]) and torch.equal(held.train.images, expected)
    assert (streamed.mean, streamed.std, streamed.pixel_format) == (held.mean, held.std, held.pixel_format)
    payload = pickle.dumps(store)
    assert len(payload) < 2000 < arrays["train_images"].nbytes  # the memory map, not the pixels, travels
    assert torch.equal(pickle.loads(payload)[idx], expected[idx])


def test_workers_serve_the_batches_the_main_process_reads(tmp_path):
    chunked_npz(tmp_path / "c.npz")
    folder = write_folder(tmp_path / "f", num_classes=2, per_class=10, image_size=12, rgb=True)
    spec = parse_spec({"data": {"source": "folder", "path": str(folder), "image_size": 8}}).data
    files = file_store(sorted(folder.rglob("*.png")), spec, str(folder))
    mapped = bundle_for(source="npz", path=str(tmp_path / "c.npz"), load="stream").train.images
    plan = [torch.tensor([3, 1, 2]), torch.tensor([0, 19]), torch.tensor([7])]
    for store in (mapped, files, files.subset(np.arange(19, -1, -1))):
        served = list(pixel_batches(store, plan, workers=2))
        assert [index.tolist() for index, _ in served] == [b.tolist() for b in plan]
        for (_, pixels), batch in zip(served, plan, strict=True):
            assert torch.equal(pixels, store[batch])


def test_a_file_that_breaks_in_a_worker_is_one_data_error(tmp_path):
    folder = write_folder(tmp_path / "f", num_classes=2, per_class=3)
    broken = folder / "class_1" / "0.png"
    broken.write_bytes(broken.read_bytes()[:60])  # the header survives, the pixels do not
    store = FileStore(sorted(folder.rglob("*.png")), 1, 12, "uint8")
    with pytest.raises(DataError) as info:
        list(pixel_batches(store, [list(range(6))], workers=1))
    assert "0.png" in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(DataError, match="0.png"):  # and the data stage's streaming pass finds it up front
        bundle_for(source="folder", path=str(folder), load="stream")


def test_lazy_folder_and_csv_hold_paths_until_read(tmp_path, monkeypatch):
    folder = write_folder(tmp_path / "f", num_classes=3, per_class=10)
    monkeypatch.setattr(prepare_module, "IN_MEMORY_BYTES", 0)  # auto streams anything
    bundle = bundle_for(source="folder", path=str(folder))
    assert isinstance(bundle.train.images, SubsetStore) and isinstance(bundle.train.images.base, FileStore)
    held = bundle_for(source="folder", path=str(folder), load="memory")
    assert torch.equal(bundle.train.images[:], held.train.images)
    assert bundle.mean == held.mean and bundle.std == held.std
    teacher_part = bundle.train.subset(np.array([2, 0]))  # what the teachers stage does: still lazy, no copy
    assert isinstance(teacher_part.images, LazyStore) and torch.equal(teacher_part.images[:],
                                                                       held.train.images[[2, 0]])


def test_npy_folder_is_an_npz_source(tmp_path):
    arrays = dict(np.load(write_npz(tmp_path / "a.npz")))
    (tmp_path / "npy").mkdir()
    for key, value in arrays.items():
        np.save(tmp_path / "npy" / f"{key}.npy", value)
    bundle = bundle_for(source="npz", path=str(tmp_path / "npy"), load="stream")
    assert isinstance(bundle.train.images.array, np.memmap)
    np.testing.assert_array_equal(bundle.test.images[:].numpy()[:, 0], arrays["test_images"])


def test_compressed_npz_is_read_when_small_and_refused_with_advice_when_large(tmp_path, monkeypatch):
    arrays = dict(np.load(write_npz(tmp_path / "a.npz")))
    np.savez_compressed(tmp_path / "z.npz", **arrays)
    bundle = bundle_for(source="npz", path=str(tmp_path / "z.npz"))
    np.testing.assert_array_equal(bundle.test.images.numpy()[:, 0], arrays["test_images"])
    monkeypatch.setattr(npz_module, "COMPRESSED_LIMIT", 100)
    with pytest.raises(DataError, match="cannot be memory-mapped; re-save the arrays uncompressed \\(np.savez"):
        bundle_for(source="npz", path=str(tmp_path / "z.npz"))


def test_a_16bit_stream_resized_on_the_fly(tmp_path):
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", 30), ("val", 6), ("test", 6)):
        arrays[f"{split}_images"] = rng.integers(0, 65536, size=(n, 12, 12)).astype(np.uint16)
        arrays[f"{split}_labels"] = np.arange(n) % 2
    np.savez(tmp_path / "d.npz", **arrays)
    bundle = bundle_for(source="npz", path=str(tmp_path / "d.npz"), image_size=8, channels=3, load="stream")
    x = bundle.train.images[torch.arange(4)]
    assert x.dtype == torch.uint16 and tuple(x.shape) == (4, 3, 8, 8)
    resized = Image.fromarray(arrays["train_images"][0].astype(np.float32)).resize((8, 8), Image.BILINEAR)
    np.testing.assert_array_equal(x[0, 1].numpy(), np.rint(np.asarray(resized)).astype(np.uint16))
