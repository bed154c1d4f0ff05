"""The robustness certificate (``certificate.json``) and its optional gate.

Schema (format 1)::

    format, compressor_version
    model:      name, file, sha256 (of the weights file), arch, params, task, classes
    data:       source, fingerprint (the data stage's hash of the data files), split, test_samples,
                samples (attacks / corruptions), smoothing_samples
    seed:       the spec seed (drives every random draw of the evaluation)
    parameters: the resolved ``robustness`` spec section
    results:    clean, attacks[norm][method][{eps, accuracy, precision, recall, f1, auc, conditional_accuracy,
                max_perturbation}], corruptions{mca, mca_conditional, table}, smoothing{certified_accuracy,
                abstain_rate, per_sample, ...}, landscape{coordinates, loss, accuracy}
    comparison: other models of the run: name -> {file, sha256, clean, attacks, mca, certified_accuracy}
    gate:       passed (true when every threshold holds or none is set), checks[{name, threshold, value, passed}]
"""

from __future__ import annotations

import math

import numpy as np

import compressor
from compressor.robustness.evaluate import SUMMARY_KEYS
from compressor.robustness.smoothing import certified_accuracy
from compressor.spec.robustness import GateSpec, RobustnessSpec

CERTIFICATE_FORMAT = 1
GATE_EXIT_CODE = 3  # ``compressor run`` / ``compressor certify`` exit status when a gate threshold fails


def _attack_value(results: dict, method: str, norm: str, eps: float) -> float | None:
    for entry in ((results.get("attacks") or {}).get(norm) or {}).get(method, []):
        if math.isclose(entry["eps"], eps, rel_tol=1e-6, abs_tol=1e-9):
            return entry["accuracy"]
    return None


def _certified_value(results: dict, radius: float) -> float | None:
    smoothing = results.get("smoothing")
    if not smoothing:
        return None
    per = smoothing["per_sample"]
    radii = np.array(per["radius"], dtype=np.float64)  # an abstention's None becomes NaN
    return certified_accuracy(np.array(per["prediction"]), radii, np.array(per["label"]), [radius])[0]


def _check(name: str, threshold: float, value: float | None) -> dict:
    passed = value is not None and value >= threshold
    return {"name": name, "threshold": threshold, "value": value, "passed": bool(passed)}


def evaluate_gate(gate: GateSpec, results: dict) -> dict:
    """Compare every threshold of ``gate`` with the final model's ``results``.

    A figure that is missing (e.g. not computed) fails its threshold. Certified accuracy is computed at the
    threshold's radius from the per-sample radii, so the radius need not be on the report's grid.

    Returns:
        ``{"passed": bool, "checks": [{"name", "threshold", "value", "passed"}, ...]}``.
    """
    checks = []
    if gate.min_clean_accuracy is not None:
        checks.append(_check("min_clean_accuracy", gate.min_clean_accuracy, results["clean"]["accuracy"]))
    for method in ("fgsm", "pgd"):
        for t in getattr(gate, f"min_{method}_accuracy"):
            checks.append(_check(f"min_{method}_accuracy ({t.norm} eps={t.eps:.6g})", t.value,
                                 _attack_value(results, method, t.norm, t.eps)))
    if gate.min_mca is not None:
        checks.append(_check("min_mca", gate.min_mca, (results.get("corruptions") or {}).get("mca")))
    for t in gate.min_certified_accuracy:
        checks.append(_check(f"min_certified_accuracy (radius={t.radius:.6g})", t.value,
                             _certified_value(results, t.radius)))
    return {"passed": all(c["passed"] for c in checks), "checks": checks}


def failure_messages(gate: dict) -> list[str]:
    """One readable line per failed threshold, e.g. ``gate min_clean_accuracy failed: 0.8120 < 0.9000``."""
    lines = []
    for c in gate.get("checks", []):
        if not c["passed"]:
            value = "not measured" if c["value"] is None else f"{c['value']:.4f}"
            lines.append(f"robustness gate {c['name']} failed: {value} < {c['threshold']:.4f}")
    return lines


def headline(certificate: dict) -> str:
    """One line of the key figures: clean accuracy, PGD at the largest eps per norm, mCA, certified accuracy at the
    smallest positive radius of the grid, and the gate."""
    r = certificate["results"]
    parts = [f"clean {r['clean']['accuracy']:.3f}"]
    for norm, methods in (r.get("attacks") or {}).items():
        entries = methods.get("pgd") or methods.get("fgsm") or []
        if entries:
            method = "PGD" if methods.get("pgd") else "FGSM"
            parts.append(f"{method} {norm} eps={entries[-1]['eps']:.4g} {entries[-1]['accuracy']:.3f}")
    if r.get("corruptions"):
        parts.append(f"mCA {r['corruptions']['mca']:.3f}")
    if r.get("smoothing"):
        levels = [e for e in r["smoothing"]["certified_accuracy"] if e["radius"] > 0] or r["smoothing"][
            "certified_accuracy"]
        parts.append(f"certified@{levels[0]['radius']:g} {levels[0]['accuracy']:.3f}")
    gate = certificate["gate"]
    parts.append("gate " + ("-" if not gate["checks"] else "PASS" if gate["passed"] else "FAIL"))
    return f"{certificate['model']['name']}: " + ", ".join(parts)


def comparison_entry(record: dict) -> dict:
    """The compact figures of a comparison model: clean metrics, attack accuracies, mCA, certified accuracy."""
    r = record["results"]
    attacks = {norm: {method: [{"eps": e["eps"], "accuracy": e["accuracy"], "f1": e["f1"]} for e in entries]
                      for method, entries in methods.items()}
               for norm, methods in (r.get("attacks") or {}).items()}
    smoothing = r.get("smoothing")
    return {
        "file": record["file"], "sha256": record["sha256"], "arch": record.get("arch"), "params": record.get("params"),
        "clean": {k: r["clean"][k] for k in SUMMARY_KEYS},
        "attacks": attacks,
        "mca": (r.get("corruptions") or {}).get("mca"),
        "certified_accuracy": smoothing["certified_accuracy"] if smoothing else None,
    }


def build_certificate(final: dict, comparisons: list[dict], spec: RobustnessSpec, *, seed: int, data: dict) -> dict:
    """The content of ``certificate.json``.

    Args:
        final: the final model's record: ``{"name", "file", "sha256", "arch", "params", "task", "classes",
            "results"}`` (``results`` from ``evaluate_model``).
        comparisons: records of the other models, same shape.
        spec: the robustness section (stored in full; its gate is evaluated here).
        seed: the spec seed.
        data: ``{"source", "fingerprint", "split", "test_samples"}``.
    """
    results = final["results"]
    return {
        "format": CERTIFICATE_FORMAT,
        "compressor_version": compressor.__version__,
        "model": {k: final.get(k) for k in ("name", "file", "sha256", "arch", "params", "task", "classes")},
        "data": {**data, "samples": results["samples"],
                 "smoothing_samples": (results.get("smoothing") or {}).get("samples")},
        "seed": seed,
        "parameters": spec.model_dump(mode="json"),
        "results": results,
        "comparison": {c["name"]: comparison_entry(c) for c in comparisons},
        "gate": evaluate_gate(spec.gate, results),
    }
