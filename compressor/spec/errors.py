"""The spec's error type and the bounds on what its messages echo back.

A spec comes from the user, so a message must never grow with the input: a value is shown through a bounded
``repr`` (at most ``MAX_VALUE_CHARS`` characters), a line is cut at ``MAX_LINE_CHARS`` and at most
``MAX_MESSAGES`` problems are listed.
"""

from __future__ import annotations

import reprlib
from typing import Any

MAX_VALUE_CHARS = 80
MAX_LINE_CHARS = 500
MAX_MESSAGES = 20

_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxdict, _REPR.maxlist, _REPR.maxtuple, _REPR.maxset = 3, 4, 6, 6, 6
_REPR.maxstring, _REPR.maxlong, _REPR.maxother = MAX_VALUE_CHARS, 40, MAX_VALUE_CHARS


class SpecError(Exception):
    """A spec that cannot be used; ``messages`` holds one line per problem."""

    def __init__(self, messages: list[str]):
        messages = [clip(m, MAX_LINE_CHARS) for m in messages]
        if len(messages) > MAX_MESSAGES + 1:  # (so that a capped list, unpickled, stays as it is)
            messages = [*messages[:MAX_MESSAGES], f"... and {len(messages) - MAX_MESSAGES} more problems"]
        super().__init__(messages)  # args stay the message list, so the error survives pickling
        self.messages = messages

    def __str__(self) -> str:
        return "\n".join(self.messages)


def clip(text: str, limit: int = MAX_VALUE_CHARS) -> str:
    """``text`` on one printable line, cut to ``limit`` characters ending in ``...``.

    Runs of whitespace become one space; a lone surrogate (an undecodable byte of a command-line argument) becomes
    a backslash escape, so that printing the message cannot fail.
    """
    line = " ".join(str(text).split())
    line = line.encode("utf-8", "backslashreplace").decode("utf-8")
    return line if len(line) <= limit else line[: limit - 3] + "..."


def show(value: Any) -> str:
    """A short ``repr`` of a user-supplied value: nested containers and long strings are elided, one line."""
    return clip(_REPR.repr(value))
