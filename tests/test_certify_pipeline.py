"""The certify and report stages in a run: certificate, report files and plots, the gate's exit status, the
``compressor certify`` and ``compressor report`` commands."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest
import yaml
from click.testing import CliRunner

from compressor.cli import main
from compressor.io import read_json, sha256_file
from compressor.pipeline import run_pipeline
from compressor.spec import parse_spec
from tests.synthetic import fast_spec

pytestmark = pytest.mark.slow

TINY_ROBUSTNESS = {
    "enabled": True,
    "models": "all",
    "samples": 32,
    "attacks": {"linf_eps": ["2/255", "8/255"], "l2_eps": [0.5], "steps": 3},
    "corruptions": {"names": ["gaussian_noise", "jpeg", "contrast"], "severities": [1, 5]},
    "smoothing": {"n0": 20, "n": 200, "predict_n": 50, "samples": 12, "radii": [0.0, 0.1, 0.2]},
    "landscape": {"grid": 5, "samples": 32},
}
ENV = {**os.environ, "COMPRESSOR_QUIET": "1"}


def cli(*args: str) -> subprocess.CompletedProcess:
    """``compressor ARGS`` in a child process (exit status and stderr exactly as a user sees them)."""
    return subprocess.run([sys.executable, "-m", "compressor", *args], capture_output=True, text=True, env=ENV)


def cli_inprocess(*args: str):
    """``compressor ARGS`` through click's test runner (no interpreter start-up): exit code, stdout, stderr."""
    result = CliRunner().invoke(main, list(args), env={"COMPRESSOR_QUIET": "1"})
    assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit), result.exception
    return result


@pytest.fixture(scope="module")
def certified_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("certified")
    raw = fast_spec(noise={"kind": "symmetric", "rate": 0.3}, robustness=TINY_ROBUSTNESS)
    results = run_pipeline(parse_spec(raw), run_dir)
    return raw, run_dir, {r.name: r for r in results}


def test_run_writes_certificate_report_and_plots(certified_run):
    _, run_dir, results = certified_run
    assert results["certify"].status == "ran" and results["report"].status == "ran"
    for name in ("certificate.json", "report.md", "report.html", "certify/student_averaged.json",
                 "certify/student.json", "certify/teacher_0.json", "certify/teacher_1.json"):
        assert (run_dir / name).exists(), name
    plots = sorted(p.name for p in (run_dir / "plots").glob("*.png"))
    assert len(plots) >= 4
    assert {"accuracy_vs_eps.png", "certified_accuracy.png", "corruptions.png", "confusion_matrix.png",
            "loss_landscape.png", "training_curves.png", "label_noise.png"} <= set(plots)
    markdown = (run_dir / "report.md").read_text()
    for section in ("## Models", "## Label noise", "### Adversarial attacks", "### Common corruptions",
                    "### Randomized-smoothing certificate", "### Loss landscape", "### Gate"):
        assert section in markdown, section
    assert all(f"plots/{p}" in markdown for p in plots)
    html = (run_dir / "report.html").read_text()
    assert html.count("data:image/png;base64,") == len(plots) and 'src="plots/' not in html  # self-contained


def test_certificate_content(certified_run):
    _, run_dir, results = certified_run
    cert = read_json(run_dir / "certificate.json")
    assert cert["model"]["name"] == "student_averaged"
    assert cert["model"]["sha256"] == sha256_file(run_dir / "student.safetensors")
    assert cert["data"]["fingerprint"] == read_json(run_dir / "data" / "summary.json")["fingerprint"]
    assert cert["seed"] == 0 and cert["parameters"]["smoothing"]["n"] == 200
    r = cert["results"]
    metrics = read_json(run_dir / "metrics.json")
    assert r["samples"] == 32 and 0 < r["clean"]["accuracy"] <= 1
    linf = r["attacks"]["linf"]
    assert [e["eps"] for e in linf["pgd"]] == pytest.approx([2 / 255, 8 / 255])
    for method in ("fgsm", "pgd"):
        for entry in linf[method]:
            assert entry["max_perturbation"] <= entry["eps"] * (1 + 1e-5)
            assert entry["accuracy"] <= r["clean"]["accuracy"] + 1e-9
    for fgsm_entry, pgd_entry in zip(linf["fgsm"], linf["pgd"], strict=True):
        assert pgd_entry["accuracy"] <= fgsm_entry["accuracy"]
    assert set(r["corruptions"]["table"]) == {"gaussian_noise", "jpeg", "contrast"}
    smoothing = r["smoothing"]
    assert len(smoothing["per_sample"]["radius"]) == 12 and [e["radius"] for e in smoothing["certified_accuracy"]] == [
        0.0, 0.1, 0.2]
    assert len(r["landscape"]["loss"]) == 5
    assert set(cert["comparison"]) == {"student", "teacher_0", "teacher_1"}
    assert cert["comparison"]["student"]["sha256"] == sha256_file(run_dir / "student" / "last.safetensors")
    assert cert["gate"] == {"passed": True, "checks": []} and results["certify"].summary["gate_failures"] == []
    # the certificate is about the metrics stage's final model (its clean accuracy is on the 32 certified samples)
    assert metrics["final_model"] == "student_averaged"


def test_failed_gate_exits_non_zero_and_names_the_threshold(certified_run, tmp_path):
    raw, run_dir, _ = certified_run
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    cached = (copy / "certify" / "student_averaged.json").stat().st_mtime_ns
    gated = {**raw, "robustness": {**TINY_ROBUSTNESS, "gate": {
        "min_clean_accuracy": 0.0, "min_pgd_accuracy": {"eps": "8/255", "value": 1.0}}}}
    spec_file = tmp_path / "gated.yaml"
    spec_file.write_text(yaml.safe_dump(gated))
    proc = cli("run", str(spec_file), "--out", str(copy))
    assert proc.returncode == 3, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "robustness gate min_pgd_accuracy (linf eps=0.0313725) failed" in proc.stderr
    assert "min_clean_accuracy" not in proc.stderr  # the threshold that holds is not reported as failed
    cert = read_json(copy / "certificate.json")
    assert cert["gate"]["passed"] is False and [c["passed"] for c in cert["gate"]["checks"]] == [True, False]
    assert "| FAIL |" in (copy / "report.md").read_text()  # the later stages still ran
    # only the gate changed: the models' figures were reused, not recomputed
    assert (copy / "certify" / "student_averaged.json").stat().st_mtime_ns == cached


def test_certify_command(certified_run, tmp_path):
    raw, run_dir, _ = certified_run
    spec_file = tmp_path / "spec.yaml"
    spec_file.write_text(yaml.safe_dump(raw))
    out = tmp_path / "cert.json"
    quick = ("--set", "robustness.landscape.enabled=false", "--set", "robustness.smoothing.samples=4")
    result = cli_inprocess("certify", str(run_dir / "student" / "last.safetensors"), "--spec", str(spec_file),
                           "--out", str(out), "--set", "robustness.gate.min_clean_accuracy=0.0", *quick)
    assert result.exit_code == 0, result.output
    cert = read_json(out)
    assert cert["model"]["sha256"] == sha256_file(run_dir / "student" / "last.safetensors")
    assert cert["gate"]["passed"] and "clean accuracy" in result.stdout
    # the same model and settings as in the run give the same figures (same seed, same samples)
    run_record = read_json(run_dir / "certify" / "student.json")["results"]
    assert cert["results"]["attacks"] == run_record["attacks"]
    result = cli_inprocess("certify", str(run_dir), "--out", str(out), "--set", "robustness.gate.min_mca=1.0", *quick)
    assert result.exit_code == 3 and "robustness gate min_mca failed" in result.stderr
    result = cli_inprocess("certify", str(run_dir / "student.safetensors"), "--out", str(out))
    assert result.exit_code == 2 and "needs --spec" in result.stderr
    bad = tmp_path / "bad[red].safetensors"  # not a safetensors file, and a name rich would read as markup
    bad.write_text("nope")
    result = cli_inprocess("certify", str(bad), "--spec", str(spec_file), "--out", str(out))
    assert result.exit_code == 2 and "Traceback" not in result.stderr
    assert f"{bad}: not a compressor checkpoint" in " ".join(result.stderr.split())
    assert " ".join(result.stderr.split()).count(str(bad)) == 1


def test_report_command_regenerates_the_report(certified_run, tmp_path):
    _, run_dir, _ = certified_run
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    (copy / "report.md").unlink()
    (copy / "report.html").unlink()
    shutil.rmtree(copy / "plots")
    spec = yaml.safe_load((copy / "spec.yaml").read_text())
    spec["device"] = "cuda"  # trained elsewhere on a GPU: the report is still written here, GPU or not
    (copy / "spec.yaml").write_text(yaml.safe_dump(spec))
    result = cli_inprocess("report", str(copy))
    assert result.exit_code == 0, result.output
    assert (copy / "report.md").read_text() == (run_dir / "report.md").read_text()
    assert len(list((copy / "plots").glob("*.png"))) == len(list((run_dir / "plots").glob("*.png")))
    result = cli_inprocess("report", str(tmp_path))
    assert result.exit_code == 2 and "not a finished run directory" in result.stderr
