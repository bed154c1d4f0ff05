"""Reproducible artefacts: ``write_npz`` writes the same bytes for the same arrays, and ``np.load`` reads them."""

from __future__ import annotations

import time

import numpy as np

from compressor.io import write_npz
from compressor.pipeline import run_pipeline
from compressor.pipeline.data_stage import DATA_STAGE
from compressor.run_layout import RunLayout
from compressor.spec import parse_spec
from tests.synthetic import fast_spec


def test_write_npz_bytes_depend_on_the_arrays_alone_and_load_back(tmp_path):
    rng = np.random.default_rng(7)
    arrays = {"labels": rng.integers(0, 10, 37), "mask": rng.random(37) < 0.4,
              "probs": rng.random((37, 3)).astype(np.float32), "empty": np.zeros((0, 2))}
    write_npz(tmp_path / "a.npz", arrays)
    time.sleep(2.1)  # zip timestamps have a 2-second resolution: a stamped time would differ now
    write_npz(tmp_path / "b.npz", arrays)
    assert (tmp_path / "a.npz").read_bytes() == (tmp_path / "b.npz").read_bytes()
    with np.load(tmp_path / "a.npz") as loaded:
        assert sorted(loaded.files) == sorted(arrays)
        for key, array in arrays.items():
            assert loaded[key].dtype == array.dtype and np.array_equal(loaded[key], array), key
    write_npz(tmp_path / "c.npz", {**arrays, "labels": arrays["labels"] + 1})
    assert (tmp_path / "c.npz").read_bytes() != (tmp_path / "a.npz").read_bytes()


def test_two_runs_of_the_data_stage_write_the_same_labels_file(tmp_path):
    spec = parse_spec(fast_spec(noise={"kind": "symmetric", "rate": 0.3}))
    run_pipeline(spec, tmp_path / "one", stages=[DATA_STAGE])
    time.sleep(2.1)
    run_pipeline(spec, tmp_path / "two", stages=[DATA_STAGE])
    assert RunLayout(tmp_path / "one").data_labels.read_bytes() == RunLayout(tmp_path / "two").data_labels.read_bytes()
