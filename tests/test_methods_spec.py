"""Spec sections of the methods: presets (Baselines I-V, RoS-KD), validation messages, example specs."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from compressor.spec import dump_spec, load_spec, parse_spec
from tests.synthetic import errors_of

ROOT = Path(__file__).resolve().parents[1]
METHOD_EXAMPLES = ("baselines.yaml", "roskd.yaml", "cmd.yaml", "noise_in_kd.yaml", "groupdistil.yaml")


def test_defaults_leave_every_method_off():
    d = parse_spec({}).distillation
    assert d.gate.knowledge == "all" and not d.teacher_noise.fickle and d.teacher_noise.swap == "none"
    assert d.messy.rate == 0 and d.soft_randomization.sigma == 0 and not d.group_dro.enabled
    assert not d.mutual.enabled and d.training.target.kind == "ce" and d.uses_teachers


@pytest.mark.parametrize(
    "preset, expected",
    [
        ("baseline_1", {"alpha": 0.0, "averaging": False}),
        ("baseline_2", {"count": 1, "overlap": 1.0, "weighting": "single", "averaging": False}),
        ("baseline_3", {"overlap": 1.0, "weighting": "equal", "averaging": False}),
        ("baseline_4", {"overlap": 1.0, "weighting": "adaptive", "averaging": False}),
        ("baseline_5", {"overlap": 0.4, "weighting": "exponential", "averaging": False}),
        ("roskd", {"overlap": 0.4, "weighting": "exponential", "averaging": True}),
    ],
)
def test_presets_set_their_fields(preset, expected):
    spec = parse_spec({"method": {"preset": preset}})
    got = {"alpha": spec.distillation.alpha, "count": spec.subsets.count, "overlap": spec.subsets.overlap,
           "weighting": spec.distillation.weighting, "averaging": spec.distillation.averaging.enabled}
    assert {k: got[k] for k in expected} == expected
    assert spec.distillation.uses_teachers == (preset != "baseline_1")
    # the resolved spec re-validates to itself (the preset's values do not conflict with themselves)
    assert parse_spec(yaml.safe_load(dump_spec(spec))) == spec


def test_preset_conflicts_are_reported_not_overwritten():
    (message,) = errors_of({"method": {"preset": "baseline_3"}, "subsets": {"overlap": 0.4},
                            "distillation": {"weighting": "exponential"}})
    assert "method.preset 'baseline_3'" in message
    assert "subsets.overlap is 0.4" in message and "distillation.weighting is 'exponential'" in message
    # a value equal to the preset's is fine; unrelated fields stay free
    spec = parse_spec({"method": {"preset": "baseline_3"}, "subsets": {"overlap": 1.0, "count": 4},
                       "distillation": {"temperature": 2.0}})
    assert spec.subsets.count == 4 and spec.distillation.temperature == 2.0


def test_preset_requirements_and_typos():
    assert "overlapping subsets" in errors_of({"method": {"preset": "roskd"}, "subsets": {"overlap": 1.0}})[0]
    assert "subsets.count is 1" in errors_of({"method": {"preset": "baseline_3"}, "subsets": {"count": 1}})[0]
    (message,) = errors_of({"method": {"preset": "baseline3"}})
    assert message.startswith("method.preset:") and "did you mean 'baseline_3'" in message


def test_method_field_validation_messages():
    assert "b2 is 0" in errors_of({"distillation": {"gate": {"knowledge": "cmd_p"}}})[0]
    assert "only used by knowledge: cmd_p" in errors_of({"distillation": {"gate": {"knowledge": "cmd_s", "b2": 1}}})[0]
    assert "teachers.dropout is 0" in errors_of({"distillation": {"teacher_noise": {"fickle": True}}})[0]
    assert "swap_probability is 0" in errors_of({"distillation": {"teacher_noise": {"swap": "top2"}}})[0]
    assert "act on the teachers" in errors_of({"distillation": {"alpha": 0, "teacher_noise": {"logit_noise": 0.1}}})[0]
    assert "exponential weights" in errors_of({"distillation": {"weighting": "equal", "weight_draw": "sample"}})[0]
    assert "group labels" in errors_of({"distillation": {"group_dro": {"enabled": True}}})[0]  # digits has none
    assert "single-label only" in errors_of({"data": {"source": "npz", "path": "x.npz", "task": "multilabel"},
                                             "distillation": {"teacher_noise": {"swap": "all",
                                                                                "swap_probability": 0.5}}})[0]
    assert "did you mean 'resnet18'" in errors_of({"distillation": {"mutual": {"enabled": True,
                                                                               "peer_arch": "resnet19"}}})[0]
    (message,) = errors_of({"distillation": {"training": {"target": {"kind": "prosellfc"}}}})
    assert message.startswith("distillation.training.target.kind:") and "did you mean 'proselflc'" in message
    (message,) = errors_of({"teachers": {"mesy": {"rate": 0.1}}})
    assert "did you mean 'messy'" in message
    assert errors_of({"distillation": {"messy": {"rate": 1.0}}})[0].startswith("distillation.messy.rate:")


@pytest.mark.parametrize("name", METHOD_EXAMPLES)
def test_method_examples_validate(name):
    spec = load_spec(ROOT / "examples" / name)
    assert spec.name


@pytest.mark.parametrize("preset", ["baseline_1", "baseline_2", "baseline_3", "baseline_4", "baseline_5", "roskd"])
def test_baselines_example_takes_every_preset(preset):
    spec = load_spec(ROOT / "examples" / "baselines.yaml", [f"method.preset={preset}"])
    assert spec.method.preset == preset


def test_quality_benchmark_rows_are_valid_specs():
    import sys

    sys.path.insert(0, str(ROOT / "benchmarks" / "quality"))
    try:
        from rows import MAIN_ROWS, NOISE_SETTINGS, ROWS, row_spec
    finally:
        sys.path.pop(0)
    assert {row.label for row in ROWS} >= set(MAIN_ROWS)
    for row in ROWS:
        for noise in NOISE_SETTINGS:
            spec = parse_spec(row_spec(row, noise, 0, group_data="groups.npz"))
            assert spec.distillation.uses_teachers == (row.label != "Baseline I")
            if row.label == "Baseline II":
                assert spec.subsets.count == 1 and spec.distillation.weighting == "single"
            if row.label == "RoS-KD + CMD":
                assert spec.distillation.gate.knowledge == "cmd_p" and spec.distillation.averaging.enabled
