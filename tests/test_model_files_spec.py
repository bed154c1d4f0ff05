"""Spec fields naming model files: ``teachers.models``, ``teachers.pretrained``, ``student.pretrained``."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from compressor.spec import dump_spec, load_spec, parse_spec
from tests.synthetic import errors_of


def test_teacher_count_is_the_length_of_the_list():
    spec = parse_spec({"teachers": {"models": ["a.onnx", {"path": "b.safetensors", "arch": "resnet18"}]}})
    assert spec.subsets.count == 2
    assert spec.teachers.is_onnx(0) and not spec.teachers.is_onnx(1)
    assert spec.teachers.used_as_is(0) and spec.teachers.used_as_is(1)
    assert parse_spec(yaml.safe_load(dump_spec(spec))) == spec  # the resolved spec reads back as it was
    assert parse_spec({"teachers": {"models": ["a.onnx"]}, "subsets": {"count": 1}}).subsets.count == 1
    assert parse_spec({"teachers": {"models": ["a.onnx"]}, "method": {"preset": "baseline_2"}}).subsets.count == 1


def test_bare_paths_and_custom_normalisation():
    spec = parse_spec({"teachers": {"pretrained": "w.pth"}, "student": {"pretrained": "s.safetensors"}})
    assert str(spec.teachers.pretrained.path) == "w.pth" and spec.teachers.pretrained.normalization == "auto"
    assert str(spec.student.pretrained.path) == "s.safetensors"
    custom = parse_spec({"teachers": {"models": [{"path": "t.onnx", "mean": [0.5], "std": [0.5]}]}})
    assert custom.teachers.models[0].normalization == "custom"


@pytest.mark.parametrize("raw, expected", [
    ({"teachers": {"models": ["a.onnx"]}, "subsets": {"count": 3}},
     "subsets.count is 3 but teachers.models lists 1 teachers"),
    ({"teachers": {"models": ["a.onnx", "b.onnx"]}, "method": {"preset": "baseline_2"}},
     "subsets.count is 1 but teachers.models lists 2 teachers"),
    ({"teachers": {"models": [{"path": "a.onnx", "finetune": True}]}}, "a.onnx: an ONNX teacher cannot be fine-tuned"),
    ({"teachers": {"models": [{"path": "a.onnx", "arch": "resnet18"}]}}, "a.onnx: arch is for weights files"),
    ({"teachers": {"models": ["a.h5"]}}, "a.h5: unsupported file type '.h5'"),
    ({"teachers": {"models": ["a.pth"]}}, "a.pth: a state dict needs arch"),
    ({"teachers": {"models": [{"path": "a.pt", "arch": "resnt18"}]}}, "did you mean 'resnet18'"),
    ({"teachers": {"models": [{"path": "a.pt", "arch": "resnet18", "output": "probabilities"}]}},
     "output applies to ONNX teachers"),
    ({"teachers": {"models": ["a.onnx"], "pretrained": "w.pth"}}, "with teachers.models give each weights file"),
    ({"teachers": {"models": ["a.onnx"]}, "distillation": {"alpha": 0.0}}, "distillation.alpha is 0"),
    ({"teachers": {"models": ["a.onnx"], "dropout": 0.2}, "distillation": {"teacher_noise": {"fickle": True}}},
     "a.onnx is an ONNX teacher"),
    ({"teachers": {"pretrained": "w.onnx"}}, "w.onnx: unsupported file type '.onnx'"),
    ({"student": {"pretrained": {"path": "w.pth", "normalization": "imagenet", "mean": [0.5], "std": [1.0]}}},
     "cannot be combined with normalization: imagenet"),
    ({"student": {"pretrained": {"path": "w.pth", "mean": [0.5]}}}, "needs both mean and std"),
    ({"student": {"pretrained": {"path": "w.pth", "mean": [0.5], "std": [0.0]}}}, "std must be positive"),
])
def test_inconsistent_model_files_are_spec_errors(raw, expected):
    errors = errors_of(raw)
    assert len(errors) == 1 and expected in errors[0], errors


def test_the_existing_teachers_example_validates():
    spec = load_spec(Path(__file__).resolve().parents[1] / "examples" / "existing_teachers.yaml")
    assert spec.subsets.count == 3 and spec.teachers.is_onnx(0) and not spec.teachers.is_onnx(1)
    assert [spec.teachers.used_as_is(i) for i in range(3)] == [True, True, False]
    assert spec.student.pretrained.path.name == "resnet18-imagenet.safetensors"
