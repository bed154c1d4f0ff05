"""The label audit: out-of-sample probabilities, planted label flips found, the CSV, drop / relabel, the spec option."""

from __future__ import annotations

import csv
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from compressor.data import overlapping_subsets, to_model_input
from compressor.data.label_audit import (
    COLUMNS,
    LabelIssues,
    apply_issues,
    find_issues,
    out_of_sample_probabilities,
    read_issues_csv,
    seen_mask,
    write_issues_csv,
)
from compressor.data.stores import LazyStore, materialize
from compressor.metrics import predict_logits
from compressor.models import build_classifier
from compressor.pipeline import distill_stage, run_pipeline
from compressor.pipeline.audit_stage import BATCH, teacher_logits
from compressor.pipeline.context import RunContext
from compressor.pipeline.distill_stage import Candidate, choose_label_issues, distillation_split, label_issue_modes
from compressor.pipeline.metrics_stage import METRICS_STAGE
from compressor.pipeline.records import LabelAudit, StudentSummary
from compressor.pipeline.report_stage import REPORT_STAGE, worst_issues
from compressor.pipeline.runner import STAGES
from compressor.run_layout import RunLayout
from compressor.spec import parse_spec
from compressor.task import Task
from tests.synthetic import count_store_reads, errors_of, fast_spec, statuses


def test_out_of_sample_probabilities_average_the_teachers_that_did_not_see_a_sample():
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(4), size=(3, 5)).astype(np.float32)  # [K=3, N=5, C=4]
    seen = np.array([[1, 1, 0, 0, 1], [1, 0, 1, 0, 1], [0, 0, 0, 1, 1]], dtype=bool)
    mean, oos = out_of_sample_probabilities(probs, seen)
    np.testing.assert_allclose(mean[0], probs[2, 0], rtol=1e-6)  # only teacher 2 did not see sample 0
    np.testing.assert_allclose(mean[1], (probs[1, 1] + probs[2, 1]) / 2, rtol=1e-6)
    np.testing.assert_allclose(mean[3], (probs[0, 3] + probs[1, 3]) / 2, rtol=1e-6)
    np.testing.assert_allclose(mean[4], probs[:, 4].mean(0), rtol=1e-6)  # seen by all: the whole ensemble
    assert oos.tolist() == [True, True, True, True, False]
    np.testing.assert_allclose(mean.sum(1), 1.0, rtol=1e-5)


def _planted_digits(rate: float, seed: int):
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    x, y = x[:900] / 16.0, y[:900]
    rng = np.random.default_rng(seed)
    flipped = rng.random(len(y)) < rate
    noisy = y.copy()
    noisy[flipped] = (y[flipped] + rng.integers(1, 10, flipped.sum())) % 10  # always a different class
    return x, y, noisy, flipped


def test_audit_finds_planted_label_flips():
    """Teachers (logistic regressions here, for speed) on overlapping subsets; the audit must find the flips."""
    from sklearn.linear_model import LogisticRegression

    seed = int(torch.initial_seed() % 2**31)
    x, _, noisy, flipped = _planted_digits(0.25, seed)
    subsets = overlapping_subsets(len(noisy), 3, 0.2, seed)
    probs = np.stack([LogisticRegression(max_iter=300, C=0.05).fit(x[s], noisy[s]).predict_proba(x)
                      for s in subsets])
    mean, oos = out_of_sample_probabilities(probs, seen_mask(subsets, len(noisy)))
    issues = find_issues(noisy, mean, oos, Task.MULTICLASS)
    hits = flipped[issues.index].sum()
    precision, recall = hits / len(issues), hits / flipped.sum()
    assert precision > 0.8 and recall > 0.7, (precision, recall)  # chance: precision 0.25
    assert np.all(np.diff(issues.score) >= 0)  # worst first
    assert np.array_equal(issues.given, noisy[issues.index])
    assert np.array_equal(issues.suggested, mean[issues.index].argmax(1))
    assert np.mean(issues.suggested[flipped[issues.index]] != noisy[issues.index][flipped[issues.index]]) == 1.0


def test_multilabel_audit_flags_flipped_label_sets():
    rng = np.random.default_rng(int(torch.initial_seed() % 2**31))
    clean = (rng.random((400, 4)) < 0.3).astype(np.float32)
    probs = np.clip(clean * 0.9 + 0.05 + rng.normal(0, 0.03, clean.shape), 0.01, 0.99)
    given = clean.copy()
    flipped = rng.random(400) < 0.1
    given[flipped, 0] = 1 - given[flipped, 0]
    issues = find_issues(given, probs, np.ones(400, bool), Task.MULTILABEL)
    assert flipped[issues.index].mean() > 0.8 and flipped[issues.index].sum() / flipped.sum() > 0.8
    assert issues.suggested.shape == (len(issues), 4)


@pytest.mark.parametrize("task", [Task.MULTICLASS, Task.MULTILABEL])
def test_csv_round_trip(tmp_path, task):
    given = np.array([3, 1]) if not task.multilabel else np.array([[0, 1, 1, 0], [1, 0, 0, 0]], np.float32)
    suggested = np.array([2, 0]) if not task.multilabel else np.array([[0, 0, 1, 0], [0, 0, 0, 1]], np.float32)
    issues = LabelIssues(np.array([7, 2]), given, suggested, np.array([0.01, 0.2]), np.array([True, False]))
    path = tmp_path / "issues.csv"
    write_issues_csv(path, issues, task, ["a", "b", "c", "d"])
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == COLUMNS
    assert rows[0]["index"] == "7" and rows[1]["out_of_sample"] == "0"
    back = read_issues_csv(path, task, 4)
    for name in ("index", "given", "suggested", "out_of_sample"):
        assert np.array_equal(getattr(back, name), getattr(issues, name)), name
    np.testing.assert_allclose(back.score, issues.score)


def test_apply_issues_drops_or_relabels_only_the_flagged_rows():
    labels = np.array([0, 1, 2, 3, 4])
    issues = LabelIssues(np.array([3, 1]), labels[[3, 1]], np.array([9, 8]), np.zeros(2), np.ones(2, bool))
    rows, kept = apply_issues(labels, issues, "report")
    assert rows.tolist() == [0, 1, 2, 3, 4] and kept.tolist() == labels.tolist()
    rows, kept = apply_issues(labels, issues, "drop")
    assert rows.tolist() == [0, 2, 4] and kept.tolist() == [0, 2, 4]
    rows, relabelled = apply_issues(labels, issues, "relabel")
    assert rows.tolist() == [0, 1, 2, 3, 4] and relabelled.tolist() == [0, 8, 2, 9, 4]
    assert labels.tolist() == [0, 1, 2, 3, 4]  # the given labels are not changed in place


def same_weights(a, b) -> bool:
    """Whether two weight files hold the same tensors, bit for bit."""
    first, second = load_file(a), load_file(b)
    return first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)


def test_auto_keeps_the_candidate_with_the_best_validation_accuracy_then_loss_then_report():
    def candidate(mode, accuracy, loss):
        return Candidate(mode=mode, models={}, info=None, peer_info=None, history=None, averaged_checkpoints=0,
                         teacher_logits=None, changed=0, seconds=0.0,
                         val={"student": {"accuracy": accuracy, "loss": loss}})

    assert choose_label_issues([candidate("report", 0.5, 1.0), candidate("drop", 0.6, 2.0)]).mode == "drop"
    assert choose_label_issues([candidate("report", 0.6, 1.0), candidate("drop", 0.5, 0.1)]).mode == "report"
    assert choose_label_issues([candidate("report", 0.6, 1.0), candidate("drop", 0.6, 0.9)]).mode == "drop"
    assert choose_label_issues([candidate("report", 0.6, 1.0), candidate("drop", 0.6, 1.0)]).mode == "report"


def test_spec_option_validates():
    assert parse_spec(fast_spec()).data.label_issues == "auto"
    assert parse_spec(fast_spec(distillation={"alpha": 0.0})).data.label_issues == "auto"  # auto is report there
    assert parse_spec(fast_spec(data={"label_issues": "relabel"})).data.label_issues == "relabel"
    assert any("label_issues" in m for m in errors_of(fast_spec(data={"label_issues": "fix"})))
    no_teachers = fast_spec(data={"label_issues": "drop"}, distillation={"alpha": 0.0})
    assert any("data.label_issues: drop" in m for m in errors_of(no_teachers))


@pytest.mark.slow
def test_pipeline_audit_stage_and_distillation_modes(tmp_path):
    raw = fast_spec(noise={"kind": "symmetric", "rate": 0.3})
    run_dir = tmp_path / "run"
    stages = [s for s in STAGES if s.name in ("data", "teachers", "audit", "distill")]
    first = statuses(run_pipeline(parse_spec(raw), run_dir, stages=[*stages, METRICS_STAGE, REPORT_STAGE]))
    assert first["audit"] == "ran" and first["report"] == "ran"
    layout = RunLayout(run_dir)
    assert "## Label audit" in layout.report_md.read_text() and (layout.plots / "label_issues.png").exists()
    assert "data.label_issues is auto, which kept" in layout.report_md.read_text()
    with open(layout.label_issues, newline="") as handle:
        header = next(csv.reader(handle))
    assert {"index", "given_label", "suggested_label", "score"} <= set(header)
    audit = LabelAudit.read(layout.label_audit)
    labels = np.load(layout.data_labels)
    issues = read_issues_csv(layout.label_issues, Task.MULTICLASS, 10)
    assert audit.flagged == len(issues) > 0 and audit.samples == len(labels["train_labels"])
    assert np.array_equal(issues.given, labels["train_labels"][issues.index])
    assert audit.precision == pytest.approx(labels["train_noise_mask"][issues.index].mean())

    auto = StudentSummary.read(layout.student_summary)  # the first run used the default, auto
    assert set(auto.label_issues_choice) == {"report", "drop"} and auto.label_issues in ("report", "drop")
    for mode in ("report", "drop", "relabel"):
        copy = tmp_path / mode
        shutil.copytree(run_dir, copy)
        spec = parse_spec(fast_spec(noise={"kind": "symmetric", "rate": 0.3}, data={"label_issues": mode}))
        ctx = RunContext(spec=spec, run_dir=copy, device=torch.device("cpu"))
        split, rows, changed = distillation_split(ctx, mode)
        assert changed == (0 if mode == "report" else len(issues))
        if mode == "drop":
            assert len(split) == audit.samples - len(issues) and not np.isin(rows, issues.index).any()
            assert np.array_equal(split.labels, labels["train_labels"][rows])
        elif mode == "relabel":
            assert len(split) == audit.samples and rows is None
            assert np.array_equal(split.labels[issues.index], issues.suggested)
        result = statuses(run_pipeline(spec, copy, stages=stages))
        assert result["data"] == result["teachers"] == result["audit"] == "skipped"
        assert result["distill"] == "ran"
        summary = StudentSummary.read(RunLayout(copy).student_summary)
        assert summary.label_issues == mode and summary.changed_rows == changed
        assert summary.label_issues_choice is None
        if mode in auto.label_issues_choice:  # auto trained this very student (same start, batches and data)
            assert auto.label_issues_choice[mode]["accuracy"] == summary.val[summary.final]["accuracy"]
            assert auto.label_issues_choice[mode]["changed_rows"] == changed
        if mode == auto.label_issues:
            assert same_weights(layout.final_student, RunLayout(copy).final_student)
    kept = auto.label_issues_choice[auto.label_issues]
    assert all((kept["accuracy"], -kept["loss"]) >= (other["accuracy"], -other["loss"])
               for other in auto.label_issues_choice.values())

    few = tmp_path / "few"  # an audit that flags under 1% of the rows: auto trains one student (labels as given)
    shutil.copytree(run_dir, few)
    ctx = RunContext(spec=parse_spec(raw), run_dir=few, device=torch.device("cpu"))
    assert label_issue_modes(ctx) == ["report", "drop"]
    keep = int(0.01 * audit.samples)
    write_issues_csv(RunLayout(few).label_issues, LabelIssues(*(getattr(issues, name)[:keep] for name in (
        "index", "given", "suggested", "score", "out_of_sample"))), Task.MULTICLASS, [str(c) for c in range(10)])
    assert label_issue_modes(ctx) == ["report"]



def test_audit_and_report_read_a_16bit_store_in_batches_through_the_window(tmp_path, monkeypatch):
    """The teachers' logits and the report's images come through ``data.window`` (a 12-bit window on uint16 pixels:
    the type's range would give other inputs) from a memory-mapped split read in batches, never whole."""
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", BATCH + 40), ("val", 20), ("test", 20)):
        arrays[f"{split}_images"] = rng.integers(0, 4096, (n, 8, 8), dtype=np.uint16)
        arrays[f"{split}_labels"] = rng.integers(0, 3, (n, 1)).astype(np.uint8)
    np.savez(tmp_path / "d.npz", **arrays)
    window = (0.0, 4095.0)
    spec = parse_spec(fast_spec(data={"source": "npz", "path": str(tmp_path / "d.npz"), "load": "stream",
                                      "window": list(window)}))
    ctx = RunContext(spec=spec, run_dir=tmp_path / "run", device=torch.device("cpu"))
    bundle = ctx.bundle()
    train = bundle.train
    assert isinstance(train.images, LazyStore) and train.window == window
    pixels = materialize(train.images)
    torch.manual_seed(0)
    teachers = [build_classifier("tiny_cnn", bundle.channels, bundle.num_classes, bundle.image_size, bundle.mean,
                                 bundle.std) for _ in range(2)]
    monkeypatch.setattr(RunContext, "load_teachers", lambda self: teachers)
    reads = count_store_reads(monkeypatch)
    logits = teacher_logits(ctx)
    assert reads and max(reads) <= BATCH < len(train)
    for got, teacher in zip(logits, teachers, strict=True):
        np.testing.assert_allclose(got, predict_logits(teacher, pixels, "cpu", window=window), rtol=1e-5, atol=1e-5)
        assert not np.allclose(got, predict_logits(teacher, pixels, "cpu"), atol=1e-3)  # the type's range differs

    index = np.array([BATCH + 3, 7, 100])
    given = train.labels[index]
    issues = LabelIssues(index, given, (given + 1) % 3, np.array([0.01, 0.02, 0.03]), np.ones(3, bool))
    ctx.layout.label_issues.parent.mkdir(parents=True, exist_ok=True)
    write_issues_csv(ctx.layout.label_issues, issues, bundle.task, bundle.class_names)
    reads.clear()
    shown = worst_issues(ctx)
    assert reads == [3] and len(shown["captions"]) == 3
    np.testing.assert_array_equal(shown["images"], to_model_input(pixels[index], window, "cpu").numpy())


@pytest.mark.slow
def test_auto_resumes_after_a_failure_between_its_two_students(tmp_path, monkeypatch):
    """A run that fails while ``auto`` distils its second student resumes from the first one's last checkpoint and
    ends with the uninterrupted run's student."""
    spec = parse_spec(fast_spec(noise={"kind": "symmetric", "rate": 0.3}))
    stages = [s for s in STAGES if s.name in ("data", "teachers", "audit", "distill")]
    run_pipeline(spec, tmp_path / "whole", stages=stages)
    failed = tmp_path / "failed"
    original = distill_stage._distil_candidate

    def fail_on_drop(ctx, teachers, pool, mode, hooks, checkpoint):
        if mode == "drop":
            raise RuntimeError("stopped before the second student")
        return original(ctx, teachers, pool, mode, hooks, checkpoint)

    monkeypatch.setattr(distill_stage, "_distil_candidate", fail_on_drop)
    with pytest.raises(RuntimeError, match="second student"):
        run_pipeline(spec, failed, stages=stages)
    first = RunLayout(failed).checkpoint("distill", "state-report.pt")
    assert torch.load(first, weights_only=True)["epoch"] == spec.distillation.training.epochs - 1
    monkeypatch.setattr(distill_stage, "_distil_candidate", original)
    result = statuses(run_pipeline(spec, failed, stages=stages, resume=True))
    assert result["distill"] == "ran" and not first.exists()
    assert same_weights(RunLayout(failed).final_student, RunLayout(tmp_path / "whole").final_student)
