"""MicroBatcher: concurrent submissions share model calls, each gets its own rows, limits hold, errors propagate."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from compressor.export.batching import MicroBatcher


class GatedModel:
    """Row i of the output is 2 * row i of the input. Records batch sizes; the first call blocks until ``release``,
    so requests submitted meanwhile are queued together (deterministic batches without timing assumptions)."""

    def __init__(self, fail_on: float | None = None):
        self.sizes: list[int] = []
        self.fail_on = fail_on
        self.gate = threading.Event()

    def release(self) -> None:
        self.gate.set()

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        self.sizes.append(len(batch))
        assert self.gate.wait(10)
        if self.fail_on is not None and (batch == self.fail_on).any():
            raise RuntimeError("model failed")
        return batch * 2


def wait_for_first_call(model: GatedModel) -> None:
    deadline = time.monotonic() + 10
    while not model.sizes:
        assert time.monotonic() < deadline
        time.sleep(0.001)


def test_queued_requests_share_a_call_and_get_their_own_rows():
    model = GatedModel()
    batcher = MicroBatcher(model, max_batch_size=64, max_wait_ms=0)
    try:
        blocker = batcher.submit(np.full((1, 3), -1.0))
        wait_for_first_call(model)  # the worker is busy: the next requests queue up
        sizes = [1, 2, 3, 1, 4]
        futures = [batcher.submit(np.full((n, 3), float(i))) for i, n in enumerate(sizes)]
        model.release()
        for i, (future, n) in enumerate(zip(futures, sizes, strict=True)):
            np.testing.assert_array_equal(future.result(5), np.full((n, 3), 2.0 * i))
        blocker.result(5)
    finally:
        batcher.close()
    assert model.sizes == [1, 11]  # the five queued requests (11 rows) ran in one call
    stats = batcher.stats.snapshot()
    assert stats["batches"] == 2 and stats["requests"] == 6 and stats["max_batch_requests"] == 5
    assert stats["requests_per_batch"] == {"1": 1, "5": 1} and stats["images"] == 12


def test_batches_respect_the_size_limit_and_big_requests_run_alone():
    model = GatedModel()
    batcher = MicroBatcher(model, max_batch_size=4, max_wait_ms=0)
    try:
        blocker = batcher.submit(np.zeros((1, 1)))
        wait_for_first_call(model)
        sizes = (3, 2, 9, 1, 1)
        futures = [batcher.submit(np.full((n, 1), float(n))) for n in sizes]
        model.release()
        for future, n in zip(futures, sizes, strict=True):
            assert future.result(5).shape == (n, 1) and (future.result() == 2.0 * n).all()
        blocker.result(5)
    finally:
        batcher.close()
    assert model.sizes == [1, 3, 2, 9, 2]  # 3 | 2 (3 + 2 > 4) | 9 alone | 1 + 1


def test_waits_for_company_within_the_window():
    model = GatedModel()
    model.release()
    batcher = MicroBatcher(model, max_batch_size=8, max_wait_ms=1000)
    try:
        first = batcher.submit(np.ones((1, 2)))
        time.sleep(0.05)
        second = batcher.submit(np.ones((1, 2)))
        first.result(5), second.result(5)
    finally:
        batcher.close()
    assert model.sizes == [2]


def test_no_wait_when_nobody_else_is_in_flight():
    model = GatedModel()
    model.release()
    batcher = MicroBatcher(model, max_batch_size=8, max_wait_ms=5000, in_flight=lambda: 1)
    try:
        start = time.perf_counter()
        batcher.submit(np.ones((1, 2))).result(10)
        assert time.perf_counter() - start < 2.5  # did not sit out the 5 s window
    finally:
        batcher.close()


def test_model_errors_reach_every_request_and_the_worker_survives():
    model = GatedModel(fail_on=7.0)
    batcher = MicroBatcher(model, max_batch_size=16, max_wait_ms=0)
    try:
        blocker = batcher.submit(np.zeros((1, 1)))
        wait_for_first_call(model)
        bad, good = batcher.submit(np.full((1, 1), 7.0)), batcher.submit(np.full((1, 1), 1.0))
        model.release()
        with pytest.raises(RuntimeError, match="model failed"):
            bad.result(5)
        with pytest.raises(RuntimeError, match="model failed"):
            good.result(5)  # it shared the failing call
        blocker.result(5)
        assert batcher.submit(np.full((2, 1), 3.0)).result(5).tolist() == [[6.0], [6.0]]
        assert batcher.alive and batcher.stats.snapshot()["failed_batches"] == 1
    finally:
        batcher.close()


def test_close_answers_queued_requests_then_refuses_new_ones():
    model = GatedModel()
    batcher = MicroBatcher(model, max_batch_size=2, max_wait_ms=50)
    futures = [batcher.submit(np.full((1, 1), float(i))) for i in range(5)]
    model.release()
    batcher.close()
    assert [f.result(5).item() for f in futures] == [0.0, 2.0, 4.0, 6.0, 8.0]
    assert not batcher.alive
    with pytest.raises(RuntimeError, match="closed"):
        batcher.submit(np.zeros((1, 1)))
    with pytest.raises(ValueError, match="max_batch_size"):
        MicroBatcher(model, max_batch_size=0)
