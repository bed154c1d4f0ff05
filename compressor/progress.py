"""Progress bars (rich) for long work, written to stderr; quiet with ``COMPRESSOR_QUIET=1``."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

console = Console(stderr=True)


class Bar:
    """One progress bar: ``advance()`` per step, ``note()`` to show the latest figures beside it."""

    def __init__(self, progress: Progress, task_id: int):
        self._progress, self._task = progress, task_id

    def advance(self, steps: int = 1) -> None:
        self._progress.advance(self._task, steps)

    def note(self, text: str) -> None:
        self._progress.update(self._task, info=text)


@contextlib.contextmanager
def progress_bar(description: str, total: int) -> Iterator[Bar]:
    """A bar of ``total`` steps labelled ``description``; disabled when ``COMPRESSOR_QUIET=1``."""
    columns = (
        TextColumn("{task.description:<22}"), BarColumn(bar_width=24), MofNCompleteColumn(),
        TimeElapsedColumn(), TimeRemainingColumn(), TextColumn("{task.fields[info]}"),
    )
    quiet = os.environ.get("COMPRESSOR_QUIET") == "1"
    with Progress(*columns, console=console, transient=False, disable=quiet) as progress:
        yield Bar(progress, progress.add_task(description, total=total, info=""))
