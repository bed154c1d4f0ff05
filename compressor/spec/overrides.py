"""``--set a.b.c=value`` overrides of a raw spec: the value is YAML, list items are addressed by index."""

from __future__ import annotations

import re
from typing import Any

from compressor.spec.errors import SpecError, clip
from compressor.spec.safe_yaml import read_yaml

_INDEX = re.compile(r"[0-9]{1,9}")
_NAME = re.compile(r"[A-Za-z0-9_]+")


def apply_override(raw: dict, assignment: str) -> None:
    """Apply one ``--set a.b.c=value`` to the raw spec dict; the value is parsed as YAML (numbers, lists, ...).

    A missing section on the way is created; an existing list is entered by item index (``teachers.archs.0=...``).

    Raises:
        SpecError: no ``=``, an empty key, invalid YAML, a path through a value, or a list index out of range.
    """
    if "=" not in assignment:
        raise SpecError([f"--set {clip(repr(assignment))}: expected KEY=VALUE, e.g. distillation.alpha=0.5"])
    key, text = assignment.split("=", 1)
    parts = [p for p in key.strip().split(".") if p]
    if not parts:
        raise SpecError([f"--set {clip(repr(assignment))}: empty key"])
    label = f"--set {clip('.'.join(parts))}"
    value = read_yaml(text, label)
    node: Any = raw
    for i, part in enumerate(parts):
        here = ".".join(parts[:i])
        if isinstance(node, list):
            part = _list_index(node, part, here, label)
        elif not _NAME.fullmatch(part):
            raise SpecError([f"{label}: {clip(repr(part), 40)} is not a field name"])
        if i == len(parts) - 1:
            node[part] = value
            return
        child = node.get(part) if isinstance(node, dict) else node[part]
        if child is None and isinstance(node, dict):
            child = node[part] = {}
        elif not isinstance(child, (dict, list)):
            raise SpecError([f"{label}: '{clip('.'.join(parts[: i + 1]))}' is a value, not a section"])
        node = child


def copy_tree(node: Any) -> Any:
    """Copy of nested dicts and lists in which no part is shared (scalars are shared; they are never changed)."""
    if isinstance(node, dict):
        return {key: copy_tree(value) for key, value in node.items()}
    if isinstance(node, list):
        return [copy_tree(value) for value in node]
    return node


def _list_index(items: list, part: str, where: str, label: str) -> int:
    """``part`` as an index into ``items`` (the list at ``where``), or SpecError naming the valid range."""
    if _INDEX.fullmatch(part) and int(part) < len(items):
        return int(part)
    valid = f"indexes 0 to {len(items) - 1}" if items else "it is empty"
    raise SpecError([f"{label}: '{clip(part, 20)}' is not an index of the list '{clip(where)}' ({valid}); "
                     f"set the whole list instead, e.g. {clip(where)}=[...]"])
