"""What every command shares: the output consoles, the one-line failure exit and the spec loader."""

from __future__ import annotations

import sys
from typing import NoReturn

from rich.console import Console
from rich.markup import escape

from compressor.progress import console as err_console

# Wide enough for the summary tables when stdout is a file or a pipe (rich assumes 80 columns there).
out_console = Console(width=None if sys.stdout.isatty() else 120)


def fail(messages: list[str], code: int) -> NoReturn:
    """Print one line per problem to stderr and exit with ``code`` (no traceback).

    Codes (README, "Exit codes"): 2 bad input (spec, data, model file, command line), 3 a quality or robustness gate
    failed, 1 an internal error only (``compressor.cli.errors``), 130 interrupted.
    """
    for message in messages:  # messages are plain text: a "[" in a path or value must not read as markup
        err_console.print(f"[red]error:[/red] {escape(message)}", highlight=False, markup=True, soft_wrap=True)
    sys.exit(code)


def load(spec_path: str, overrides: tuple[str, ...] = ()):
    """The resolved spec at ``spec_path`` with ``--set`` overrides; exits with status 2 naming every problem.

    A spec that lists extension methods (``training.methods``) has them checked against the method registry (this
    loads torch, which specs without such methods never do).
    """
    from compressor.spec import SpecError, load_spec

    try:
        spec = load_spec(spec_path, overrides)
    except SpecError as exc:
        fail(exc.messages, 2)
    refs = {f"{section}.training.methods": getattr(spec, section).training.methods
            for section in ("teachers", "distillation")}
    if any(refs.values()):
        from compressor.methods.registry import unknown_methods

        problems = [f"{field}: unknown method {name!r} (register it with compressor.methods.register_method)"
                    for field, listed in refs.items() for name in unknown_methods(listed)]
        if problems:
            fail(problems, 2)
    return spec


def check_tracking(spec) -> None:
    """Exit 2 with one line when the spec's tracking backend is not installed (the MLflow extra)."""
    from compressor.tracking import missing_extra

    problem = missing_extra(spec.tracking.backend)
    if problem:
        fail([problem], 2)

