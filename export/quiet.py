"""Silencing the advisory output of the ONNX exporters and the quantizer."""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from collections.abc import Iterator, Sequence


@contextlib.contextmanager
def quiet(loggers: Sequence[str] = ("",), *, stderr: bool = False) -> Iterator[None]:
    """Swallow stdout (and stderr when asked) and warnings, and raise the named loggers (``""``: the root) to ERROR
    inside the block; their levels are restored afterwards. Failures still raise."""
    saved = [(logging.getLogger(name), logging.getLogger(name).level) for name in loggers]
    sink = io.StringIO()
    try:
        for logger, _ in saved:
            logger.setLevel(logging.ERROR)
        with contextlib.redirect_stdout(sink), contextlib.ExitStack() as stack, warnings.catch_warnings():
            if stderr:
                stack.enter_context(contextlib.redirect_stderr(sink))
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in saved:
            logger.setLevel(level)
