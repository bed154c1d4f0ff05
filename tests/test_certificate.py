"""The robustness spec section (fractions, gate cross-checks) and the gate of the certificate."""

from __future__ import annotations

import pytest

from compressor.robustness.certificate import evaluate_gate, failure_messages
from compressor.spec import SpecError, parse_spec
from compressor.spec.robustness import GateSpec


def results(clean=0.9, pgd=0.5, mca=0.7):
    return {
        "clean": {"accuracy": clean},
        "attacks": {"linf": {"pgd": [{"eps": 2 / 255, "accuracy": pgd}], "fgsm": [{"eps": 2 / 255, "accuracy": 0.6}]}},
        "corruptions": {"mca": mca},
        "smoothing": {"per_sample": {"prediction": [1, 0, -1, 2], "label": [1, 0, 1, 1],
                                     "radius": [0.5, 0.2, None, 0.9]}},
    }


def test_fractions_and_single_thresholds_are_accepted():
    spec = parse_spec({"robustness": {"attacks": {"linf_eps": ["8/255", "2/255"]},
                                      "gate": {"min_pgd_accuracy": {"eps": "2/255", "value": 0.4}}}})
    assert spec.robustness.attacks.linf_eps == pytest.approx([2 / 255, 8 / 255])
    assert spec.robustness.gate.min_pgd_accuracy[0].eps == pytest.approx(2 / 255)


def test_gate_thresholds_must_be_measurable():
    with pytest.raises(SpecError) as info:
        parse_spec({"robustness": {"gate": {"min_pgd_accuracy": {"eps": 0.5, "value": 0.4}}}})
    assert "eps 0.5 is not in robustness.attacks.linf_eps" in info.value.messages[0]
    with pytest.raises(SpecError) as info:
        parse_spec({"robustness": {"smoothing": {"enabled": False}, "gate": {"min_certified_accuracy":
                                                                              {"radius": 0.1, "value": 0.2}}}})
    assert "needs robustness.smoothing.enabled" in info.value.messages[0]
    with pytest.raises(SpecError) as info:
        parse_spec({"robustness": {"attacks": {"linf_eps": ["1/0"]}}})
    assert "robustness.attacks.linf_eps" in info.value.messages[0]
    with pytest.raises(SpecError) as info:
        parse_spec({"robustness": {"smoothing": {"sigmaa": 0.5}}})
    assert "did you mean 'sigma'" in info.value.messages[0]


def test_gate_passes_and_fails_on_each_threshold():
    gate = GateSpec(min_clean_accuracy=0.8, min_pgd_accuracy=[{"eps": 2 / 255, "value": 0.6}], min_mca=0.5,
                    min_certified_accuracy=[{"radius": 0.3, "value": 0.25}, {"radius": 0.6, "value": 0.5}])
    outcome = evaluate_gate(gate, results())
    assert not outcome["passed"]
    status = {c["name"]: c["passed"] for c in outcome["checks"]}
    assert status == {"min_clean_accuracy": True, "min_pgd_accuracy (linf eps=0.00784314)": False, "min_mca": True,
                      "min_certified_accuracy (radius=0.3)": True, "min_certified_accuracy (radius=0.6)": False}
    # radius >= 0.3 and correct: sample 0 only (sample 3 is wrong, sample 2 abstains) -> 1 of 4; >= 0.6: none
    values = {c["name"]: c["value"] for c in outcome["checks"]}
    assert values["min_certified_accuracy (radius=0.3)"] == 0.25 and values["min_certified_accuracy (radius=0.6)"] == 0
    lines = failure_messages(outcome)
    assert lines == ["robustness gate min_pgd_accuracy (linf eps=0.00784314) failed: 0.5000 < 0.6000",
                     "robustness gate min_certified_accuracy (radius=0.6) failed: 0.0000 < 0.5000"]
    assert evaluate_gate(GateSpec(), results()) == {"passed": True, "checks": []}


def test_missing_figure_fails_its_threshold():
    r = results()
    r["corruptions"] = None
    outcome = evaluate_gate(GateSpec(min_mca=0.1), r)
    assert not outcome["passed"] and "not measured" in failure_messages(outcome)[0]
