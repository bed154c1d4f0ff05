"""Reading a spec: bounded safe YAML, ``--set`` overrides, validation and readable errors."""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from compressor.spec.errors import SpecError, clip, show
from compressor.spec.overrides import apply_override, copy_tree
from compressor.spec.root import Spec
from compressor.spec.safe_yaml import MAX_BYTES, read_yaml


def close_match(word: str, choices: list[str]) -> str | None:
    """The choice closest to ``word`` (difflib ratio >= 0.6), or None."""
    found = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1, cutoff=0.6)
    return found[0] if found else None


def _model_at(loc: tuple) -> type[BaseModel] | None:
    """The pydantic model class of the spec that holds the field at ``loc`` (the parent of the last element)."""
    current: Any = Spec
    for part in loc[:-1]:
        if isinstance(part, int) or current is None:
            continue
        field = current.model_fields.get(part)
        if field is None:
            return None
        annotation = field.annotation
        current = annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None
    return current


def _part(part: Any) -> str:
    """One element of a field path: a field name or list index as is, any other key as its short repr."""
    return str(part) if isinstance(part, int) or (isinstance(part, str) and part.isidentifier()) else show(part)


def _format_error(error: dict) -> str:
    """One line for one pydantic error: field path, bad value, reason, close match."""
    loc = tuple(error.get("loc", ()))
    path = clip(".".join(_part(p) for p in loc), 200) or "<spec>"
    value = error.get("input")
    kind = error.get("type", "")
    if kind == "extra_forbidden":
        parent = _model_at(loc)
        allowed = list(parent.model_fields) if parent else []
        hint = close_match(str(loc[-1]), allowed)
        line = f"{path}: unknown field (value {show(value)})"
        if hint:
            line += f"; did you mean '{hint}'?"
        elif allowed:
            line += f"; allowed fields: {', '.join(allowed)}"
        return line
    message = error.get("msg", "invalid").removeprefix("Value error, ")
    # Model-level validators name the offending values in their message already.
    line = f"{path}: {message}" if kind == "value_error" else f"{path}: {message} (got {show(value)})"
    if kind == "literal_error" and isinstance(value, str) and len(value) <= 100:
        listed = str(error.get("ctx", {}).get("expected", "")).replace(" or ", ",")
        expected = [c.strip().strip("'") for c in listed.split(",")]
        hint = close_match(str(value), [e for e in expected if e])
        if hint:
            line += f"; did you mean '{hint}'?"
    return line


def parse_spec(raw: Any, overrides: list[str] | tuple[str, ...] = ()) -> Spec:
    """Validate a raw (already parsed) spec mapping, after applying ``--set`` overrides.

    Raises:
        SpecError: one message per problem, each with the field path, the bad value and a close match.
    """
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise SpecError([f"<spec>: the top level must be a mapping of sections, got {type(raw).__name__}"])
    raw = copy_tree(raw)  # overrides must not change the caller's dict, nor every place a YAML alias is used
    for assignment in overrides:
        apply_override(raw, assignment)
    try:
        return Spec.model_validate(raw)
    except ValidationError as exc:
        raise SpecError([_format_error(e) for e in exc.errors()]) from None


def load_spec(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> Spec:
    """Read and validate the spec file at ``path`` (UTF-8 YAML of at most ``MAX_BYTES`` bytes, not empty).

    Raises:
        SpecError: unreadable, too large, not UTF-8, empty, invalid or oversized YAML, or invalid content.
    """
    path = Path(path)
    try:
        with path.open("rb") as stream:
            data = stream.read(MAX_BYTES + 1)
    except FileNotFoundError:
        raise SpecError([f"{path}: spec file not found"]) from None
    except OSError as exc:
        raise SpecError([f"{path}: cannot read spec ({exc.strerror or exc})"]) from None
    if len(data) > MAX_BYTES:
        raise SpecError([f"{path}: spec file larger than {MAX_BYTES // 1024} KiB (a spec is a few KB)"])
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SpecError([f"{path}: not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start}); "
                         "save the spec as UTF-8"]) from None
    raw = read_yaml(text, str(path))
    if raw is None:
        raise SpecError([f"{path}: the spec is empty; write at least one field, e.g. seed: 0 "
                         "(compressor init writes a commented example)"])
    return parse_spec(raw, overrides)


def dump_spec(spec: Spec) -> str:
    """The resolved spec as YAML (every default filled in), as written into the run directory."""
    return yaml.safe_dump(spec.model_dump(mode="json"), sort_keys=False)
