"""Synthetic label noise and the teachers' overlapping subsets."""

from __future__ import annotations

import numpy as np
import pytest

from compressor.data import DataError, overlapping_subsets, prepare_data
from compressor.data.noise import inject_noise
from compressor.spec import SpecError, parse_spec


@pytest.mark.parametrize("rate", [0.2, 0.4])
def test_symmetric_noise_rate_and_never_same_class(rate):
    labels = np.random.default_rng(0).integers(0, 10, 20000)
    noisy, mask = inject_noise(labels, 10, "symmetric", rate, None, seed=1)
    assert abs(mask.mean() - rate) < 0.015
    assert np.array_equal(mask, noisy != labels)
    # corrupted labels are spread uniformly over the 9 other classes
    moved = (noisy[mask] - labels[mask]) % 10
    counts = np.bincount(moved, minlength=10)
    assert counts[0] == 0 and counts[1:].min() > 0.8 * counts[1:].mean()


def test_pairflip_moves_to_adjacent_class():
    labels = np.random.default_rng(0).integers(0, 5, 5000)
    noisy, mask = inject_noise(labels, 5, "pairflip", 0.3, None, seed=2)
    assert abs(mask.mean() - 0.3) < 0.03
    assert np.array_equal(noisy[mask], (labels[mask] + 1) % 5)


def test_transition_matrix_noise_follows_rows():
    matrix = [[0.7, 0.3, 0.0], [0.0, 1.0, 0.0], [0.5, 0.0, 0.5]]
    labels = np.repeat(np.arange(3), 4000)
    noisy, _ = inject_noise(labels, 3, "matrix", 0.0, matrix, seed=0)
    for c in range(3):
        freq = np.bincount(noisy[labels == c], minlength=3) / 4000
        assert np.allclose(freq, matrix[c], atol=0.03)
    with pytest.raises(DataError, match="2 classes"):
        inject_noise(np.zeros(4, dtype=int), 2, "matrix", 0.0, matrix, seed=0)


def test_multilabel_symmetric_noise_flips_bits():
    labels = (np.random.default_rng(0).random((4000, 6)) < 0.3).astype(np.float32)
    noisy, _ = inject_noise(labels, 6, "symmetric", 0.1, None, seed=0)
    assert abs((noisy != labels).mean() - 0.1) < 0.01
    with pytest.raises(DataError, match="single-label"):
        inject_noise(labels, 6, "pairflip", 0.1, None, seed=0)


def test_noise_reaches_train_and_val_but_not_test():
    bundle = prepare_data(parse_spec({"noise": {"kind": "symmetric", "rate": 0.4}}))
    assert 0.33 < bundle.train.noise_mask.mean() < 0.47
    assert bundle.val.noise_mask.mean() > 0.25
    assert bundle.test.clean_labels is None and not bundle.test.noise_mask.any()
    assert np.array_equal(bundle.train.labels != bundle.train.clean_labels, bundle.train.noise_mask)


@pytest.mark.parametrize("count,overlap", [(3, 0.4), (5, 0.0), (4, 1.0), (1, 0.3), (7, 0.65)])
def test_shared_core_subsets_formula(count, overlap):
    n = 1000
    subsets = overlapping_subsets(n, count, overlap, seed=4, layout="shared_core")
    assert len(subsets) == count
    covered = np.unique(np.concatenate(subsets))
    assert np.array_equal(covered, np.arange(n))  # every sample in at least one subset
    core = round(overlap * n)
    for i in range(count):
        assert abs(len(subsets[i]) - (core + (n - core) / count)) <= 1
        for j in range(i + 1, count):
            assert len(np.intersect1d(subsets[i], subsets[j])) == core
    if overlap == 0:
        assert sum(map(len, subsets)) == n  # disjoint
    if overlap == 1:
        assert all(np.array_equal(s, np.arange(n)) for s in subsets)  # identical


@pytest.mark.parametrize("count,overlap", [(3, 0.4), (5, 0.4), (2, 0.7), (1, 0.3)])
def test_random_subsets_formula(count, overlap):
    n = 6000
    subsets = overlapping_subsets(n, count, overlap, seed=4, layout="random")
    assert len(subsets) == count
    seen = np.zeros((count, n), dtype=bool)
    for i, subset in enumerate(subsets):
        assert np.array_equal(subset, np.unique(subset))  # sorted, no repeats
        seen[i, subset] = True
    assert seen.any(0).all()  # every sample in at least one subset
    # E|D_i| = N/k + p (N - N/k); the draws are binomial, so allow 4 standard deviations
    others = n - n / count
    tolerance = 4 * np.sqrt(others * overlap * (1 - overlap)) + 1
    for i in range(count):
        assert abs(len(subsets[i]) - (n / count + overlap * others)) <= tolerance
    # a sample is seen by 1 + p (k - 1) teachers on average
    assert abs(seen.sum(0).mean() - (1 + overlap * (count - 1))) < 0.03
    if count > 1:  # two subsets share 2 p N / k + p^2 (N - 2 N / k) samples on average
        shared = np.mean([(seen[i] & seen[j]).sum() for i in range(count) for j in range(i + 1, count)])
        expected = 2 * overlap * n / count + overlap**2 * (n - 2 * n / count)
        assert abs(shared - expected) < 0.05 * expected
        # unlike the shared core, no sample is in every subset unless p is large: (p^(k-1)) N of them
        assert abs(seen.all(0).mean() - overlap ** (count - 1)) < 0.03


@pytest.mark.parametrize("layout", ["random", "shared_core"])
def test_subsets_extremes(layout):
    disjoint = overlapping_subsets(1000, 4, 0.0, seed=1, layout=layout)
    assert sum(map(len, disjoint)) == 1000 and len(np.unique(np.concatenate(disjoint))) == 1000
    identical = overlapping_subsets(1000, 4, 1.0, seed=1, layout=layout)
    assert all(np.array_equal(s, np.arange(1000)) for s in identical)


def test_subsets_reject_bad_arguments():
    with pytest.raises(ValueError, match="unknown subset layout"):
        overlapping_subsets(10, 2, 0.4, 0, layout="core")
    with pytest.raises(ValueError, match="overlap"):
        overlapping_subsets(10, 2, 1.5, 0)


@pytest.mark.parametrize("layout", ["random", "shared_core"])
def test_subsets_are_seeded(layout):
    a, b = overlapping_subsets(100, 3, 0.4, 1, layout), overlapping_subsets(100, 3, 0.4, 1, layout)
    c = overlapping_subsets(100, 3, 0.4, 2, layout)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c, strict=True))


def test_spec_layout_default_and_choice():
    assert parse_spec({}).subsets.layout == "random"
    assert parse_spec({"subsets": {"layout": "shared_core"}}).subsets.layout == "shared_core"
    with pytest.raises(SpecError, match="layout"):
        parse_spec({"subsets": {"layout": "core"}})
