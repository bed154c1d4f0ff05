"""Bounded YAML reading for specs: PyYAML's safe loader with limits on size, nesting and alias expansion.

``yaml.safe_load`` constructs only plain data, but an alias shares its anchor's value, so a few hundred bytes of
nested aliases ("billion laughs") describe a tree of billions of values that validation would walk and an error
message would print. ``SpecLoader`` (a ``yaml.SafeLoader``) counts every value as it composes the document, an
alias counting as the whole value it stands for, and stops at ``MAX_NODES``; it also refuses nesting deeper than
``MAX_DEPTH``, recursive aliases and a key written twice in one mapping (YAML would keep the last silently).
"""

from __future__ import annotations

from typing import Any

import yaml
from yaml.events import AliasEvent
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from compressor.spec.errors import SpecError, clip

MAX_BYTES = 256 * 1024  # a spec is a few KB; the bound keeps the pure-Python parser's time to seconds
MAX_NODES = 100_000  # about what 256 KiB can hold written out ("0,0,0,..."): only aliases reach further
MAX_DEPTH = 32  # a spec nests about 6 levels deep
_MERGE = "tag:yaml.org,2002:merge"


class LimitError(yaml.MarkedYAMLError):
    """A document beyond one of the bounds above, or a duplicate key (a ``YAMLError`` with a position)."""

    def __init__(self, problem: str, mark: yaml.Mark | None):
        super().__init__(problem=problem, problem_mark=mark)


class SpecLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that bounds the expanded size and depth of the document and refuses duplicate keys."""

    def __init__(self, stream: str):
        super().__init__(stream)
        self._sizes: dict[int, tuple[int, int]] = {}  # id(node) -> (values under it, expanded depth)
        self._composed = 0
        self._level = 0
        self._open: set[str] = set()  # anchors of the collections being composed (an alias to one is recursive)

    def compose_node(self, parent: Node | None, index: Any) -> Node:
        """Compose one node, counting its values (an alias counts as everything it stands for)."""
        event = self.peek_event()
        if isinstance(event, AliasEvent):
            if event.anchor in self._open:
                raise LimitError(f"recursive alias *{clip(event.anchor, 40)}", event.start_mark)
            return super().compose_node(parent, index)
        self._level += 1
        self._composed += 1
        if self._level > MAX_DEPTH:
            raise LimitError(f"nested deeper than {MAX_DEPTH} levels", event.start_mark)
        if self._composed > MAX_NODES:
            raise LimitError(f"more than {MAX_NODES} values", event.start_mark)
        if event.anchor is not None:
            self._open.add(event.anchor)
        node = super().compose_node(parent, index)
        self._open.discard(event.anchor)
        self._level -= 1
        self._measure(node)
        return node

    def _measure(self, node: Node) -> None:
        """Record how many values ``node`` expands to and how deep, refusing either past its bound."""
        if isinstance(node, SequenceNode):
            children = node.value
        elif isinstance(node, MappingNode):
            children = [part for pair in node.value for part in pair]
        else:
            children = []
        measured = [self._sizes[id(child)] for child in children]
        size = 1 + sum(s for s, _ in measured)
        depth = 1 + max((d for _, d in measured), default=0)
        if size > MAX_NODES:
            raise LimitError(f"more than {MAX_NODES} values once YAML aliases are expanded", node.start_mark)
        if depth > MAX_DEPTH:
            raise LimitError(f"nested deeper than {MAX_DEPTH} levels once YAML aliases are expanded",
                             node.start_mark)
        self._sizes[id(node)] = (size, depth)

    def compose_scalar_node(self, anchor: str | None) -> ScalarNode:
        """Compose a scalar and refuse one that is not valid Unicode (a lone surrogate from a ``\\ud800`` escape)."""
        node = super().compose_scalar_node(anchor)
        try:
            node.value.encode("utf-8")
        except UnicodeEncodeError:
            raise LimitError("a string that is not valid Unicode (a lone surrogate escape)", node.start_mark) from None
        return node

    def compose_mapping_node(self, anchor: str | None) -> MappingNode:
        """Compose a mapping and refuse a key written twice in it (merge keys ``<<`` may repeat keys)."""
        node = super().compose_mapping_node(anchor)
        seen: dict[tuple[str, str], yaml.Mark] = {}
        for key, _ in node.value:
            if not isinstance(key.value, str) or key.tag == _MERGE:
                continue
            first = seen.get((key.tag, key.value))
            if first is not None:
                raise LimitError(f"duplicate key {clip(repr(key.value), 60)} (first at line {first.line + 1})",
                                 key.start_mark)
            seen[(key.tag, key.value)] = key.start_mark
        return node


def read_yaml(text: str, source: str) -> Any:
    """Parse one YAML document of user input within the bounds above; ``None`` for an empty document.

    Args:
        text: the YAML text.
        source: what the text is (a file name, ``--set key``), the start of every message.

    Raises:
        SpecError: invalid YAML, a duplicate key, or a document beyond a bound (one line, with its position).
    """
    if len(text) > MAX_BYTES:
        raise SpecError([f"{source}: {len(text)} characters; a spec may have at most {MAX_BYTES}"])
    loader = None
    try:
        loader = SpecLoader(text)  # the reader refuses control characters here
        node = loader.get_single_node()
        if node is None:
            return None
        try:
            return loader.construct_document(node)
        except (ValueError, TypeError, ArithmeticError, LookupError, AttributeError) as exc:
            # PyYAML's constructors fail this way on values they cannot build: "!!int" alone, a 5,000-digit
            # number, "2001-13-45" (a timestamp by its form), "!!timestamp x".
            raise SpecError([f"{source}: invalid YAML value ({type(exc).__name__}: {clip(str(exc), 160)})"]) from None
    except LimitError as exc:
        raise SpecError([f"{source}: {exc.problem}{_where(exc.problem_mark)}"]) from None
    except yaml.MarkedYAMLError as exc:
        problem = ", ".join(p for p in (exc.context, exc.problem) if p)
        raise SpecError([f"{source}: invalid YAML{_where(exc.problem_mark)}: {clip(problem, 200)}"]) from None
    except yaml.YAMLError as exc:  # the reader's errors: a control character, with its offset
        raise SpecError([f"{source}: invalid YAML: {clip(str(exc), 200)}"]) from None
    finally:
        if loader is not None:
            loader.dispose()

def _where(mark: yaml.Mark | None) -> str:
    return f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
