"""Internal errors (exit status 1): one line on stderr naming the file that holds the full traceback.

Every error the user can act on is caught where it happens and exits 2 or 3 with its own line (``common.fail``).
Anything else is a bug: ``ErrorLoggingGroup`` catches it at the top of the command line, writes the traceback to
``<run_dir>/logs/error.log`` when a command has named its run directory (``log_into``), else to a new temporary file,
and exits 1.
"""

from __future__ import annotations

import sys
import tempfile
import traceback
from pathlib import Path
from typing import NoReturn

import click

from compressor.run_layout import RunLayout

_run_dir: Path | None = None  # where the running command writes (set once its inputs are checked)


def log_into(run_dir: str | Path | None) -> None:
    """Make an internal error from now on log its traceback in ``run_dir``'s ``logs/error.log`` (None: a temp file)."""
    global _run_dir
    _run_dir = None if run_dir is None else Path(run_dir)


def write_traceback(text: str) -> Path:
    """Append ``text`` to the run's error log, or write it to a new temporary file; return the file."""
    if _run_dir is not None and _run_dir.is_dir():
        path = RunLayout(_run_dir).error_log
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "a") as handle:
                handle.write(text)
            return path
        except OSError:
            pass  # a read-only run directory: the temporary file below
    with tempfile.NamedTemporaryFile("w", prefix="compressor-error-", suffix=".log", delete=False) as handle:
        handle.write(text)
    return Path(handle.name)


def internal_error(exc: BaseException) -> NoReturn:
    """Log ``exc``'s traceback, print one line saying where, exit 1."""
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    try:
        where = f"full traceback in {write_traceback(text)}"
    except OSError as log_error:  # nowhere to write: the traceback goes to stderr after all
        sys.stderr.write(text)
        where = f"the traceback could not be logged ({log_error})"
    summary = (str(exc).splitlines() or [""])[0][:200]
    click.echo(f"error: internal error ({type(exc).__name__}: {summary}); {where}", err=True)
    sys.exit(1)


class ErrorLoggingGroup(click.Group):
    """A command group whose commands exit 1 with one line and a logged traceback on an unexpected exception."""

    def invoke(self, ctx: click.Context):
        """Run the command; click's own exits and aborts pass through, any other exception is an internal error."""
        try:
            return super().invoke(ctx)
        except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except Exception as exc:  # noqa: BLE001 - the one place that turns a bug into exit status 1
            internal_error(exc)
