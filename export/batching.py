"""Dynamic micro-batching: concurrent requests are queued and run together in one model call on a worker thread.

The worker takes the oldest queued request, then keeps collecting requests until the batch holds
``max_batch_size`` images or ``max_wait_ms`` have passed since it took the first one (requests already queued are
always taken without waiting). When the caller says how many requests are in flight (``in_flight``: admitted by the
server, still being decoded or queued), the worker stops waiting as soon as every one of them is in the batch, so a
lone request pays no waiting time. A request that would overflow the batch starts the next one; a request larger
than ``max_batch_size`` runs alone. Each request gets its own rows of the output through a future.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field

import numpy as np

_STOP = object()


@dataclass
class _Job:
    batch: np.ndarray
    future: Future
    queued_at: float = field(default_factory=time.perf_counter)


class BatchStats:
    """Counters of the batcher (thread-safe): batches, images and requests per batch, inference time."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.batches = 0
        self.requests = 0
        self.images = 0
        self.failed_batches = 0
        self.inference_seconds = 0.0
        self.queue_wait_seconds = 0.0
        self.images_per_batch: Counter[int] = Counter()
        self.requests_per_batch: Counter[int] = Counter()

    def record(self, jobs: list[_Job], images: int, seconds: float, started: float, failed: bool) -> None:
        """Account one model call over ``jobs``."""
        with self._lock:
            self.batches += 1
            self.requests += len(jobs)
            self.images += images
            self.failed_batches += int(failed)
            self.inference_seconds += seconds
            self.queue_wait_seconds += sum(started - job.queued_at for job in jobs)
            self.images_per_batch[images] += 1
            self.requests_per_batch[len(jobs)] += 1

    def snapshot(self) -> dict[str, object]:
        """JSON-ready copy of the counters, with means and maxima."""
        with self._lock:
            return {
                "batches": self.batches,
                "requests": self.requests,
                "images": self.images,
                "failed_batches": self.failed_batches,
                "mean_batch_images": self.images / self.batches if self.batches else 0.0,
                "mean_batch_requests": self.requests / self.batches if self.batches else 0.0,
                "max_batch_images": max(self.images_per_batch, default=0),
                "max_batch_requests": max(self.requests_per_batch, default=0),
                "images_per_batch": {str(k): v for k, v in sorted(self.images_per_batch.items())},
                "requests_per_batch": {str(k): v for k, v in sorted(self.requests_per_batch.items())},
                "inference_seconds": self.inference_seconds,
                "mean_queue_wait_ms": 1e3 * self.queue_wait_seconds / self.requests if self.requests else 0.0,
            }


class MicroBatcher:
    """Runs ``model(batch) -> outputs`` on a worker thread over batches assembled from concurrent submissions.

    Args:
        model: takes a ``[N, ...]`` array and returns ``[N, ...]`` outputs (row i answers input row i).
        max_batch_size: most images per model call (a single larger request still runs, alone).
        max_wait_ms: how long the worker waits for more requests after taking the first one.
        in_flight: optional count of requests that are on their way (admitted but not answered); no waiting once
            the batch holds all of them.
    """

    def __init__(self, model: Callable[[np.ndarray], np.ndarray], max_batch_size: int = 32, max_wait_ms: float = 5.0,
                 in_flight: Callable[[], int] | None = None):
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1 (got {max_batch_size})")
        if max_wait_ms < 0:
            raise ValueError(f"max_wait_ms must be >= 0 (got {max_wait_ms})")
        self.model = model
        self.max_batch_size = int(max_batch_size)
        self.max_wait = float(max_wait_ms) / 1e3
        self.in_flight = in_flight
        self.stats = BatchStats()
        self._queue: queue.Queue = queue.Queue()
        self._closed = False
        self._thread = threading.Thread(target=self._work, name="compressor-batcher", daemon=True)
        self._thread.start()

    @property
    def alive(self) -> bool:
        """Whether the worker thread is running."""
        return self._thread.is_alive()

    def submit(self, batch: np.ndarray) -> Future:
        """Queue ``batch`` (``[n, ...]``, n >= 1); the future resolves to its ``[n, ...]`` outputs.

        Raises:
            RuntimeError: the batcher was closed.
        """
        if self._closed:
            raise RuntimeError("the batcher is closed")
        future: Future = Future()
        self._queue.put(_Job(batch, future))
        return future

    def close(self, timeout: float = 5.0) -> None:
        """Finish the queued requests, then stop the worker."""
        if not self._closed:
            self._closed = True
            self._queue.put(_STOP)
            self._thread.join(timeout)

    def _next(self, timeout: float) -> _Job | object | None:
        """The next queued job; None when nothing came within ``timeout`` seconds."""
        try:
            return self._queue.get(timeout=timeout) if timeout > 0 else self._queue.get_nowait()
        except queue.Empty:
            return None

    def _work(self) -> None:
        carry, stopping = None, False
        while not stopping:
            first, carry = carry or self._queue.get(), None  # a job carried over opens the next batch
            if first is _STOP:
                return
            jobs, images = [first], len(first.batch)
            deadline = time.perf_counter() + self.max_wait
            while images < self.max_batch_size:
                remaining = deadline - time.perf_counter()
                if self.in_flight is not None and self.in_flight() <= len(jobs):
                    remaining = 0.0  # nobody else is coming: take what is queued, do not wait
                job = self._next(remaining)
                if job is None:
                    break
                if job is _STOP:
                    stopping = True  # run what was collected, then stop
                    break
                if images + len(job.batch) > self.max_batch_size:
                    carry = job  # it opens the next batch
                    break
                jobs.append(job)
                images += len(job.batch)
            self._run(jobs)

    def _run(self, jobs: list[_Job]) -> None:
        """One model call over ``jobs``; each future gets its rows, or the exception."""
        live = [job for job in jobs if job.future.set_running_or_notify_cancel()]
        if not live:
            return
        started = time.perf_counter()
        failed = False
        try:
            outputs = self.model(np.concatenate([job.batch for job in live]))
        except Exception as exc:  # noqa: BLE001 - the error goes to every waiting request; the worker keeps going
            failed = True
            for job in live:
                job.future.set_exception(exc)
        else:
            offset = 0
            for job in live:
                job.future.set_result(outputs[offset : offset + len(job.batch)])
                offset += len(job.batch)
        self.stats.record(live, sum(len(job.batch) for job in live), time.perf_counter() - started, started, failed)
