"""Property-based fuzzing of the spec loader and ``--set``: a Spec or one ``SpecError``, never a crash, never slow.

The documents are built from the spec's own field names (so that they reach the validators) and random values of
every YAML type, including the hostile ones: huge integers, non-finite floats, booleans, nested containers.
"""

from __future__ import annotations

import typing

import pytest
import yaml
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from compressor.cli import main
from compressor.spec import Spec, SpecError, load_spec, parse_spec
from compressor.spec.errors import MAX_LINE_CHARS, MAX_MESSAGES


def _field_paths(model: type[BaseModel], prefix: str = "") -> list[str]:
    """Every dotted field path of ``model``, sections and leaves (a list of models counts as a leaf)."""
    paths = []
    for name, field in model.model_fields.items():
        path = f"{prefix}{name}"
        paths.append(path)
        inner = [a for a in (field.annotation, *typing.get_args(field.annotation)) if isinstance(a, type)]
        section = next((a for a in inner if issubclass(a, BaseModel)), None)
        if section is not None:
            paths.extend(_field_paths(section, f"{path}."))
    return paths


PATHS = _field_paths(Spec)
NAMES = sorted({p.rsplit(".", 1)[-1] for p in PATHS})
# A few documents per second at most are worth checking in depth; the suite adds seconds, not minutes.
FUZZ = settings(max_examples=300, deadline=2000, database=None, suppress_health_check=[HealthCheck.too_slow])

scalars = st.one_of(
    st.none(), st.booleans(),
    st.integers(), st.integers(min_value=-(2**80), max_value=2**80),
    st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([1e308, -1e308, 5e-324, 0.0, -0.0, 0.5, 1.0]),
    st.text(max_size=20), st.sampled_from(NAMES), st.sampled_from(["8/255", "1/0", "x/y", "inf/1", "digits", "npz",
                                                                   "cmd_p", "roskd", "resnet18", "exponential"]),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4),
                            st.dictionaries(st.one_of(st.sampled_from(NAMES), st.text(max_size=8)), inner, max_size=4)),
    max_leaves=12,
)


@st.composite
def spec_trees(draw) -> dict:
    """A raw spec: random values at random real field paths (and a few unknown keys on the way)."""
    tree: dict = {}
    for path in draw(st.lists(st.sampled_from(PATHS), max_size=8)):
        *parents, leaf = path.split(".")
        node = tree
        for part in parents:
            child = node.get(part)
            if not isinstance(child, dict):
                child = node[part] = {}
            node = child
        node[leaf] = draw(values)
    if draw(st.booleans()):
        tree[draw(st.sampled_from(NAMES))] = draw(values)
    return tree


def assignments() -> st.SearchStrategy[str]:
    """``--set`` arguments: real and mangled paths (list indexes too), values as YAML text or arbitrary text."""
    path = st.one_of(
        st.sampled_from(PATHS),
        st.builds(lambda p, i: f"{p}.{i}", st.sampled_from(PATHS),
                  st.sampled_from(["0", "1", "5", "-1", "-9", "x", "0.foo", "99999999999", ""])),
        st.text(max_size=12),
    )
    text = st.one_of(
        values.map(lambda v: yaml.safe_dump(v, default_flow_style=True).strip()),
        st.text(max_size=16),
        st.sampled_from(["&a [*a]", "{a: 1, a: 2}", ".inf", "-.nan", "true", "[", "!!python/name:os.system", "1e308"]),
    )
    return st.one_of(st.builds(lambda p, t: f"{p}={t}", path, text), st.text(max_size=20))


def _check_error(error: SpecError) -> None:
    """A SpecError is a short list of single, bounded lines."""
    assert 1 <= len(error.messages) <= MAX_MESSAGES + 1
    for message in error.messages:
        assert message and "\n" not in message and len(message) <= MAX_LINE_CHARS
        message.encode("utf-8")  # printable on any UTF-8 terminal


def _parses_or_refuses(raw, overrides=()) -> None:
    try:
        assert isinstance(parse_spec(raw, overrides), Spec)
    except SpecError as error:
        _check_error(error)


@FUZZ
@given(spec_trees())
def test_random_spec_trees_validate_or_raise_spec_error(tree):
    _parses_or_refuses(tree)


@FUZZ
@given(values)
def test_random_documents_of_any_shape(document):
    if isinstance(document, dict) or document is None:
        _parses_or_refuses(document)
    else:
        with pytest.raises(SpecError) as info:
            parse_spec(document)
        _check_error(info.value)


@FUZZ
@given(spec_trees(), st.lists(assignments(), max_size=4))
def test_random_overrides_validate_or_raise_spec_error(tree, overrides):
    _parses_or_refuses(tree, overrides)


# YAML made of its own punctuation, anchors, aliases, merge keys and tags, around the spec's field names.
TOKENS = [
    "\n", "\n  ", "\n    ", ": ", "- ", "[", "]", "{", "}", ", ", "&a ", "&b ", "*a", "*b", "<<: ", "? ", "#", "'", '"',
    "!!str ", "!!int ", "!!float ", "!!binary ", "!!set ", "!!timestamp ", "!!python/object:os.system ", "\\u00e9",
    "\\ud800", "---\n", "...\n", "|\n", ">\n", "\t", "%YAML 1.1\n", "1e308", ".inf", ".nan", "0x1F", "0o7", "1_000",
    "2001-13-45", "1:2:3", "~", "yes", "null", "9" * 5000, *NAMES[:40],
]
yaml_texts = st.lists(st.sampled_from(TOKENS), max_size=40).map("".join)


@FUZZ
@given(st.one_of(spec_trees().map(lambda t: yaml.safe_dump(t, sort_keys=False).encode()),
                 yaml_texts.map(str.encode), st.text(max_size=200).map(str.encode), st.binary(max_size=200)))
def test_random_spec_files_load_or_raise_spec_error(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("fuzz") / "spec.yaml"
    path.write_bytes(data)
    try:
        assert isinstance(load_spec(path), Spec)
    except SpecError as error:
        _check_error(error)


@settings(max_examples=30, deadline=5000, database=None, suppress_health_check=[HealthCheck.too_slow,
                                                                                HealthCheck.function_scoped_fixture])
@given(spec_trees(), st.lists(assignments(), max_size=2))
def test_cli_validate_exits_0_or_2_without_traceback(tmp_path, tree, overrides):
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(tree) if tree else "seed: 0\n")
    args = ["validate", str(spec), *(a for o in overrides for a in ("--set", o))]
    result = CliRunner().invoke(main, args)
    assert result.exit_code in (0, 2), result.output
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
