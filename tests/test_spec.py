"""Spec loading, validation errors, overrides, templates and the CLI's handling of bad specs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from compressor.cli import TEMPLATES, main
from compressor.spec import Spec, SpecError, dump_spec, load_spec, parse_spec
from tests.synthetic import errors_of

ROOT = Path(__file__).resolve().parents[1]


def test_defaults_validate_and_round_trip():
    spec = parse_spec({})
    assert isinstance(spec, Spec)
    again = parse_spec(yaml.safe_load(dump_spec(spec)))
    assert again == spec


def test_unknown_field_names_path_value_and_close_match():
    (message,) = errors_of({"teachers": {"training": {"epoch": 3}}})
    assert message.startswith("teachers.training.epoch:")
    assert "unknown field" in message and "3" in message and "did you mean 'epochs'" in message


def test_bad_choice_suggests_close_value():
    (message,) = errors_of({"data": {"source": "digit"}})
    assert message.startswith("data.source:") and "'digit'" in message and "did you mean 'digits'" in message


def test_unknown_architecture_suggests_registered_one():
    (message,) = errors_of({"student": {"arch": "resnet19"}})
    assert message.startswith("student.arch:") and "did you mean 'resnet18'" in message


def test_registered_custom_architecture_is_accepted():
    """A name outside the built-in list is looked up in the registry, so user-registered models validate."""
    from torch import nn

    from compressor.models import register_model
    from compressor.models.registry import _REGISTRY

    assert errors_of({"student": {"arch": "my_tiny_net"}})
    register_model("my_tiny_net")(lambda in_channels, num_classes, image_size, dropout=0.0: nn.Linear(1, 1))
    try:
        assert parse_spec({"student": {"arch": "my_tiny_net"}}).student.arch == "my_tiny_net"
    finally:
        del _REGISTRY["my_tiny_net"]


def test_validation_does_not_import_torch():
    """``compressor validate`` and ``--help`` stay fast: neither the spec stack nor the command line imports torch."""
    code = (
        "import sys; from compressor.spec import load_spec; import compressor.cli; "
        f"load_spec({str(ROOT / 'examples' / 'quickstart.yaml')!r}); "
        "print(sorted(m for m in ('torch', 'torchvision', 'scipy', 'onnxruntime') if m in sys.modules))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == "[]"


def test_empty_corruption_list_is_refused():
    (message,) = errors_of({"robustness": {"corruptions": {"names": []}}})
    assert message.startswith("robustness.corruptions.names:") and "at least 1" in message


def test_every_problem_is_reported_once():
    messages = errors_of({"seed": -1, "subsets": {"count": 0}, "noise": {"rate": 2}})
    assert [m.split(":")[0] for m in messages] == ["seed", "noise.rate", "subsets.count"]


def test_cross_field_checks():
    assert "data.path is required" in errors_of({"data": {"source": "npz"}})[0]
    assert "milestones" in errors_of({"teachers": {"training": {"epochs": 5, "schedule": {"milestones": [5]}}}})[0]
    assert "noise.matrix is required" in errors_of({"noise": {"kind": "matrix"}})[0]
    assert "sum to 1" in errors_of({"noise": {"kind": "matrix", "matrix": [[0.5, 0.4], [0, 1]]}})[0]
    assert "only 3 teachers" in errors_of({"distillation": {"weighting": "single", "single_teacher": 3}})[0]


def test_overrides_parse_yaml_values():
    spec = parse_spec({}, ["distillation.alpha=0.5", "teachers.archs=[tiny_cnn, wrn16_2]", "seed=7"])
    assert spec.distillation.alpha == 0.5 and spec.teachers.archs == ["tiny_cnn", "wrn16_2"] and spec.seed == 7
    assert "expected KEY=VALUE" in errors_of({}, ["seed"])[0]
    assert errors_of({}, ["student.arhc=tiny_cnn"])[0].startswith("student.arhc: unknown field")


def test_malformed_yaml_and_missing_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("data:\n  source: digits\n   noise: [\n")
    with pytest.raises(SpecError) as info:
        load_spec(bad)
    assert "invalid YAML at line" in info.value.messages[0]
    with pytest.raises(SpecError, match="spec file not found"):
        load_spec(tmp_path / "missing.yaml")


def test_yaml_is_loaded_safely(tmp_path):
    evil = tmp_path / "evil.yaml"
    evil.write_text("name: !!python/object/apply:os.system ['echo hacked']\n")
    with pytest.raises(SpecError, match="invalid YAML"):
        load_spec(evil)


@pytest.mark.parametrize("template", TEMPLATES)
def test_init_writes_each_template_and_it_validates(tmp_path, template):
    target = tmp_path / f"{template}.yaml"
    result = CliRunner().invoke(main, ["init", "--template", template, str(target)])
    assert result.exit_code == 0, result.output
    assert target.read_text().startswith("#")  # commented
    load_spec(target)
    assert CliRunner().invoke(main, ["init", "--template", template, str(target)]).exit_code == 2  # no overwrite


def test_examples_match_templates():
    for template in TEMPLATES:
        packaged = (ROOT / "compressor" / "templates" / f"{template}.yaml").read_text()
        assert (ROOT / "examples" / f"{template}.yaml").read_text() == packaged


def test_cli_bad_spec_exits_2_without_traceback(tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text("data:\n  sorce: digits\nteachers:\n  archs: [wrn16-2]\n")
    proc = subprocess.run([sys.executable, "-m", "compressor", "validate", str(spec)], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 2
    assert "data.sorce" in proc.stderr and "did you mean 'source'" in proc.stderr
    assert "did you mean 'wrn16_2'" in proc.stderr
    run = subprocess.run([sys.executable, "-m", "compressor", "run", str(spec)], capture_output=True, text=True)
    assert run.returncode == 2 and "Traceback" not in run.stderr


def test_validate_prints_resolved_spec(tmp_path):
    spec = tmp_path / "spec.yaml"
    spec.write_text("seed: 3\n")
    result = CliRunner().invoke(main, ["validate", str(spec), "--set", "distillation.alpha=0.25"])
    assert result.exit_code == 0
    resolved = yaml.safe_load(result.stdout)
    assert resolved["seed"] == 3 and resolved["distillation"]["alpha"] == 0.25 and "teachers" in resolved
