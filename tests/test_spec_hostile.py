"""Hostile spec input (issue 15): each case ends in one ``SpecError`` line and exit 2, quickly, without a traceback."""

from __future__ import annotations

import pickle
import time
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from compressor.cli import main
from compressor.spec import SpecError, check_output_dir, load_spec, parse_spec
from compressor.spec.errors import MAX_LINE_CHARS, MAX_MESSAGES
from compressor.spec.root import MAX_SEED
from compressor.spec.safe_yaml import MAX_BYTES, MAX_DEPTH, MAX_NODES
from tests.synthetic import errors_of


def _laughs(levels: int, leaf: str = "epoch") -> str:
    """Billion laughs: level k is a list of nine aliases to level k-1, so the last stands for 9**levels values."""
    names = "abcdefghi"[:levels]
    lines = ["a: &a [lol,lol,lol,lol,lol,lol,lol,lol,lol]"]
    lines += [f"{name}: &{name} [{','.join([f'*{names[k - 1]}'] * 9)}]" for k, name in enumerate(names) if k]
    return "\n".join(lines) + f"\nteachers:\n  training:\n    {leaf}: *{names[-1]}\n"


def _spec_file(tmp_path: Path, text: str | bytes) -> Path:
    path = tmp_path / "spec.yaml"
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    return path


def _refused(path: Path, overrides=()) -> list[str]:
    with pytest.raises(SpecError) as info:
        load_spec(path, overrides)
    return info.value.messages


def _validate(args: list[str]):
    """``compressor validate`` in-process: the exit code and stderr, checked for a traceback."""
    result = CliRunner().invoke(main, ["validate", *args])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    return result.exit_code, result.stderr


# Defect 6: YAML aliases ---------------------------------------------------------------------------------------------


def test_billion_laughs_is_refused_at_once(tmp_path):
    path = _spec_file(tmp_path, _laughs(9))  # 9**9 = 387 million values once expanded
    assert path.stat().st_size < 414
    start = time.perf_counter()
    (message,) = _refused(path)
    assert time.perf_counter() - start < 5  # the unbounded loader did not finish in 30 s
    assert f"more than {MAX_NODES} values once YAML aliases are expanded" in message and "line" in message


def test_aliases_within_the_budget_are_read_but_never_echoed_whole(tmp_path):
    # Five unknown fields of up to 9**4 = 6,561 values each: the old messages printed every one of them.
    messages = _refused(_spec_file(tmp_path, _laughs(4)))
    assert sorted(m.split(":")[0] for m in messages) == ["a", "b", "c", "d", "teachers.training.epoch"]
    assert all("unknown field" in m and len(m) < 300 for m in messages)
    (epoch,) = [m for m in messages if m.startswith("teachers")]
    assert epoch.startswith("teachers.training.epoch: unknown field (value [[[[...], [...], ")
    assert epoch.endswith("...); did you mean 'epochs'?")


def test_an_echoed_value_is_cut_to_80_characters():
    (message,) = errors_of({"teachers": {"training": {"epoch": "x" * 10_000}}})
    assert message.startswith("teachers.training.epoch: unknown field (value 'xxx") and "..." in message
    assert len(message) < 200 and "did you mean 'epochs'" in message


def test_many_problems_and_long_lines_are_bounded():
    messages = errors_of({f"field{i}": i for i in range(50)} | {"seed": -1})
    assert len(messages) == MAX_MESSAGES + 1 and messages[-1] == f"... and {51 - MAX_MESSAGES} more problems"
    assert pickle.loads(pickle.dumps(SpecError(messages))).messages == messages
    (message,) = errors_of({"method": {"preset": "roskd"}, "distillation": {"weighting": ["equal"] * 5000}})
    assert "conflicts with the spec" in message and len(message) == MAX_LINE_CHARS and message.endswith("...")


def test_recursive_alias_deep_nesting_and_big_files_are_refused(tmp_path):
    assert "recursive alias *a" in _refused(_spec_file(tmp_path, "teachers: &a {training: *a}\n"))[0]
    deep = "seed: " + "[" * (MAX_DEPTH + 5) + "]" * (MAX_DEPTH + 5) + "\n"
    assert f"nested deeper than {MAX_DEPTH} levels" in _refused(_spec_file(tmp_path, deep))[0]
    big = "# padding\n" * (MAX_BYTES // 10 + 1) + "seed: 0\n"
    assert "larger than 256 KiB" in _refused(_spec_file(tmp_path, big))[0]


def test_aliases_and_merge_keys_of_an_ordinary_spec_still_work(tmp_path):
    text = ("teachers:\n  training: &train {epochs: 3, batch_size: 16}\n"
            "distillation:\n  training:\n    <<: *train\n    epochs: 5\n")
    spec = load_spec(_spec_file(tmp_path, text), ["teachers.training.epochs=4"])
    assert spec.teachers.training.epochs == 4  # --set changes one place, not every use of the anchor
    assert (spec.distillation.training.epochs, spec.distillation.training.batch_size) == (5, 16)


# Defect 7: tracebacks instead of one line ---------------------------------------------------------------------------


def test_spec_that_is_not_utf8_is_one_line(tmp_path):
    path = _spec_file(tmp_path, "name: caf\u00e9\n".encode("latin-1"))
    assert _refused(path) == [f"{path}: not UTF-8 text (byte 0xe9 at offset 9); save the spec as UTF-8"]
    code, stderr = _validate([str(path)])
    assert code == 2 and stderr.count("error:") == 1 and "not UTF-8" in stderr


@pytest.mark.parametrize("assignment, expected", [
    ("teachers.archs.5=x", "'5' is not an index of the list 'teachers.archs' (indexes 0 to 1)"),
    ("teachers.archs.x=x", "'x' is not an index of the list 'teachers.archs'"),
    ("teachers.archs.-9=x", "'-9' is not an index of the list 'teachers.archs'"),
    ("teachers.archs.0.foo=1", "'teachers.archs.0' is a value, not a section"),
])
def test_set_into_a_list_names_the_problem(tmp_path, assignment, expected):
    path = _spec_file(tmp_path, "teachers:\n  archs: [small_cnn, tiny_cnn]\n")
    (message,) = _refused(path, [assignment])
    assert message.startswith(f"--set {assignment.split('=')[0]}: ") and expected in message
    code, stderr = _validate([str(path), "--set", assignment])
    assert code == 2 and stderr.count("error:") == 1


def test_set_by_index_still_works():
    spec = parse_spec({"teachers": {"archs": ["small_cnn", "tiny_cnn"]}}, ["teachers.archs.1=wrn16_2"])
    assert spec.teachers.archs == ["small_cnn", "wrn16_2"]


@pytest.mark.parametrize("raw, field", [
    ({"seed": 2**70}, "seed"),
    ({"seed": MAX_SEED + 1}, "seed"),
    ({"teachers": {"training": {"optimizer": {"lr": 1e308}}}}, "teachers.training.optimizer.lr"),
    ({"teachers": {"training": {"optimizer": {"lr": float("inf")}}}}, "teachers.training.optimizer.lr"),
    ({"distillation": {"temperature": float("inf")}}, "distillation.temperature"),
    ({"distillation": {"temperature": 1e-300}}, "distillation.temperature"),
    ({"distillation": {"gate": {"knowledge": "cmd_p", "b2": float("-inf")}}}, "distillation.gate.b2"),
    ({"noise": {"kind": "matrix", "matrix": [[float("nan"), 1.0], [0.0, 1.0]]}}, "noise.matrix.0.0"),
    ({"robustness": {"attacks": {"linf_eps": ["inf/1"]}}}, "robustness.attacks.linf_eps.0"),
    ({"robustness": {"smoothing": {"sigma": 1e308}}}, "robustness.smoothing.sigma"),
    ({"distillation": {"teacher_noise": {"logit_noise": 1e308}}}, "distillation.teacher_noise.logit_noise"),
    ({"distillation": {"group_dro": {"eta_w": float("inf")}}}, "distillation.group_dro.eta_w"),
    ({"teachers": {"training": {"batch_size": 2**70}}}, "teachers.training.batch_size"),
])
def test_values_that_run_cannot_take_are_refused_by_validate(raw, field):
    (message,) = errors_of(raw)
    assert message.startswith(f"{field}:")


def test_largest_seed_is_accepted():
    assert parse_spec({"seed": MAX_SEED}).seed == MAX_SEED


def test_run_directory_that_is_a_file_or_a_kernel_file_system_is_refused(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("keep me")
    for bad, expected in ((afile, "exists and is not a directory"), (afile / "run", "is a file, not a directory"),
                          (Path("/proc/self/run"), "under /proc"), (Path("/sys/run"), "under /sys")):
        with pytest.raises(SpecError) as info:
            check_output_dir(bad)
        assert expected in info.value.messages[0]
    check_output_dir(tmp_path / "new" / "run")  # may not exist yet
    with pytest.raises(SpecError, match="under /dev"):
        check_output_dir("/dev/run")
    spec = _spec_file(tmp_path, f"output_dir: {afile / 'run'}\n")
    result = CliRunner().invoke(main, ["run", str(spec)])
    assert result.exit_code == 2 and "is a file, not a directory" in result.stderr
    assert afile.read_text() == "keep me"
    result = CliRunner().invoke(main, ["run", str(spec), "--set", "output_dir=/proc/compressor"])
    assert result.exit_code == 2 and "under /proc" in result.stderr


# Defect 13: values read loosely ---------------------------------------------------------------------------------


def test_booleans_and_strings_are_not_read_as_numbers():
    assert "teachers.training.batch_size: Input should be a valid integer (got True)" in errors_of(
        {"teachers": {"training": {"batch_size": True}}})
    assert errors_of({"seed": "3"})[0].startswith("seed: Input should be a valid integer")
    assert errors_of({"export": {"onnx": 1}})[0].startswith("export.onnx: Input should be a valid boolean")
    assert errors_of({"data": {"channels": True}})[0].startswith("data.channels: Input should be 1 or 3")
    spec = parse_spec({"teachers": {"training": {"optimizer": {"lr": 1}}}, "output_dir": "runs/x"})
    assert spec.teachers.training.optimizer.lr == 1.0  # a YAML integer is still a float
    assert parse_spec(yaml.safe_load(yaml.safe_dump(spec.model_dump(mode="json")))) == spec


def test_duplicate_keys_are_refused_with_both_lines(tmp_path):
    (message,) = _refused(_spec_file(tmp_path, "seed: 1\nname: a\nseed: 2\n"))
    assert "duplicate key 'seed' (first at line 1) at line 3" in message
    (message,) = _refused(_spec_file(tmp_path, "teachers:\n  dropout: 0.1\n  dropout: 0.2\n"))
    assert "duplicate key 'dropout' (first at line 2) at line 3" in message
    assert "duplicate key" in _refused(_spec_file(tmp_path, "seed: 0\n"), ["data={source: npz, source: csv}"])[0]


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n", "---\n"])
def test_empty_spec_file_is_refused(tmp_path, text):
    (message,) = _refused(_spec_file(tmp_path, text))
    assert "the spec is empty" in message
    assert load_spec(_spec_file(tmp_path, "{}\n")) == parse_spec({})  # all defaults, asked for explicitly


def test_data_path_with_digits_is_refused():
    (message,) = errors_of({"data": {"source": "digits", "path": "data/x.npz"}})
    assert "data.path is not used by source 'digits'" in message
