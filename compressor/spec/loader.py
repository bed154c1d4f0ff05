"""Reading a spec: YAML (``yaml.safe_load`` only), ``--set`` overrides, validation and readable errors."""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from compressor.spec.root import Spec


class SpecError(Exception):
    """A spec that cannot be used; ``messages`` holds one line per problem."""

    def __init__(self, messages: list[str]):
        super().__init__(list(messages))  # args stay the message list, so the error survives pickling
        self.messages = list(messages)

    def __str__(self) -> str:
        return "\n".join(self.messages)


def close_match(word: str, choices: list[str]) -> str | None:
    """The choice closest to ``word`` (difflib ratio >= 0.6), or None."""
    found = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1, cutoff=0.6)
    return found[0] if found else None


def _model_at(loc: tuple, model: type[BaseModel] = Spec) -> type[BaseModel] | None:
    """The pydantic model class that holds the field at ``loc`` (the parent of the last element)."""
    current: Any = model
    for part in loc[:-1]:
        if isinstance(part, int) or current is None:
            continue
        field = current.model_fields.get(part)
        if field is None:
            return None
        annotation = field.annotation
        current = annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None
    return current


def _format_error(error: dict) -> str:
    """One line for one pydantic error: field path, bad value, reason, close match."""
    loc = tuple(error.get("loc", ()))
    path = ".".join(str(p) for p in loc) or "<spec>"
    value = error.get("input")
    kind = error.get("type", "")
    if kind == "extra_forbidden":
        parent = _model_at(loc)
        allowed = list(parent.model_fields) if parent else []
        hint = close_match(str(loc[-1]), allowed)
        line = f"{path}: unknown field (value {value!r})"
        if hint:
            line += f"; did you mean '{hint}'?"
        elif allowed:
            line += f"; allowed fields: {', '.join(allowed)}"
        return line
    message = error.get("msg", "invalid").removeprefix("Value error, ")
    # Model-level validators name the offending values in their message already.
    line = f"{path}: {message}" if kind == "value_error" else f"{path}: {message} (got {value!r})"
    if kind == "literal_error":
        listed = str(error.get("ctx", {}).get("expected", "")).replace(" or ", ",")
        expected = [c.strip().strip("'") for c in listed.split(",")]
        hint = close_match(str(value), [e for e in expected if e])
        if hint:
            line += f"; did you mean '{hint}'?"
    return line


def apply_override(raw: dict, assignment: str) -> None:
    """Apply one ``--set a.b.c=value`` to the raw spec dict; the value is parsed as YAML (numbers, lists, ...)."""
    if "=" not in assignment:
        raise SpecError([f"--set {assignment!r}: expected KEY=VALUE, e.g. distillation.alpha=0.5"])
    key, text = assignment.split("=", 1)
    parts = [p for p in key.strip().split(".") if p]
    if not parts:
        raise SpecError([f"--set {assignment!r}: empty key"])
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise SpecError([f"--set {key}: value {text!r} is not valid YAML ({exc})"]) from None
    node: Any = raw
    for i, part in enumerate(parts[:-1]):
        if isinstance(node, list):
            node = node[int(part)]
            continue
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        elif not isinstance(child, (dict, list)):
            raise SpecError([f"--set {key}: '{'.'.join(parts[: i + 1])}' is a value, not a section"])
        node = child
    if isinstance(node, list):
        node[int(parts[-1])] = value
    else:
        node[parts[-1]] = value


def parse_spec(raw: Any, overrides: list[str] | tuple[str, ...] = ()) -> Spec:
    """Validate a raw (already parsed) spec mapping, after applying ``--set`` overrides.

    Raises:
        SpecError: one message per problem, each with the field path, the bad value and a close match.
    """
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise SpecError([f"<spec>: the top level must be a mapping of sections, got {type(raw).__name__}"])
    for assignment in overrides:
        apply_override(raw, assignment)
    try:
        return Spec.model_validate(raw)
    except ValidationError as exc:
        raise SpecError([_format_error(e) for e in exc.errors()]) from None


def load_spec(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Spec:
    """Read and validate the spec file at ``path``.

    Raises:
        SpecError: unreadable file, invalid YAML, or invalid content.
    """
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise SpecError([f"{path}: spec file not found"]) from None
    except OSError as exc:
        raise SpecError([f"{path}: cannot read spec ({exc.strerror})"]) from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise SpecError([f"{path}: invalid YAML{where}: {problem}"]) from None
    return parse_spec(raw, overrides)


def dump_spec(spec: Spec) -> str:
    """The resolved spec as YAML (every default filled in), as written into the run directory."""
    return yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False)
