"""The tracker a stage logs to (``tracking:``), opened on rank 0 for the stage's duration."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from compressor.pipeline.context import RunContext, StageError
from compressor.tracking import Tracker, TrackingError, open_tracker


@contextlib.contextmanager
def stage_tracker(ctx: RunContext) -> Iterator[Tracker | None]:
    """The run's tracker on rank 0 (None on the other ranks and when tracking is off), closed when the stage ends.

    Raises:
        StageError: the backend cannot be used.
    """
    tracker = None
    if ctx.dist.is_main:
        try:
            tracker = open_tracker(ctx.spec.model_dump(mode="json"), ctx.run_dir)
        except TrackingError as exc:
            raise StageError(str(exc)) from None
    try:
        yield tracker
    finally:
        if tracker is not None:
            tracker.close()
