"""Report pieces: Markdown and self-contained HTML rendering, confusion counts, plots written as PNG."""

from __future__ import annotations

import base64

import numpy as np

from compressor.report import plots
from compressor.report.build import eps_label, fmt
from compressor.report.confusion import confusion_counts, noise_transition
from compressor.report.document import Document, Heading, Image, Paragraph, Table, render_html, render_markdown
from compressor.task import Task

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def test_markdown_and_html_rendering(tmp_path):
    plots.confusion_matrix(np.array([[3, 1], [0, 4]]), ["a", "b"], tmp_path / "plots" / "cm.png", "title")
    doc = Document("run <1>")
    doc.add(Heading("Models"), Paragraph("x < y & z"), Table(["model", "acc"], [["a|b", "PASS"], ["c", "FAIL"]]),
            Image("plots/cm.png", "the matrix"))
    markdown = render_markdown(doc)
    assert markdown.startswith("# run <1>\n") and "## Models" in markdown
    assert "| a\\|b | PASS |" in markdown and "![the matrix](plots/cm.png)" in markdown
    html = render_html(doc, tmp_path)
    assert "<h1>run &lt;1&gt;</h1>" in html and "<p>x &lt; y &amp; z</p>" in html
    assert '<span class="pass">PASS</span>' in html and '<span class="fail">FAIL</span>' in html
    encoded = html.split("data:image/png;base64,")[1].split('"')[0]
    assert base64.b64decode(encoded) == (tmp_path / "plots" / "cm.png").read_bytes()
    assert "http" not in html.replace("http-equiv", "")  # nothing fetched from elsewhere


def test_confusion_counts_and_noise_transition():
    logits = np.array([[2.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 1.0]])
    counts = confusion_counts(logits, np.array([0, 1, 2, 2]), Task.MULTICLASS)
    assert counts.tolist() == [[1, 0, 0], [0, 1, 0], [0, 1, 1]]
    multilabel = confusion_counts(np.array([[1.0, -1.0], [1.0, 1.0]]), np.array([[1, 1], [0, 1]]), Task.MULTILABEL)
    assert multilabel.tolist() == [[1, 1, 0, 0], [1, 0, 1, 0]]  # per label: TP, FP, FN, TN
    transition = noise_transition(np.array([0, 0, 0, 1]), np.array([0, 1, 1, 1]), 2)
    np.testing.assert_allclose(transition, [[1 / 3, 2 / 3], [0, 1]])


def test_plots_are_png_files(tmp_path):
    history = {"loss": [1.0, 0.5], "accuracy": [0.5, 0.7]}
    plots.training_curves({"teacher_0": history, "student": history}, tmp_path / "curves.png")
    attacks = {"linf": {"fgsm": [{"eps": 0.01, "accuracy": 0.5}], "pgd": [{"eps": 0.01, "accuracy": 0.4}]}}
    plots.accuracy_vs_eps({"m": attacks}, {"m": 0.9}, tmp_path / "eps.png")
    smoothing = {"sigma": 0.25, "per_sample": {"prediction": [1, -1], "label": [1, 0], "radius": [0.3, None]}}
    plots.certified_accuracy_curve({"m": smoothing}, tmp_path / "cert.png")
    table = {"contrast": {"mean_accuracy": 0.5}, "jpeg": {"mean_accuracy": 0.8}}
    plots.corruption_bars({"m": {"table": table, "mca": 0.65}}, tmp_path / "bars.png")
    plots.label_counts(np.array([[1, 2, 3, 4], [4, 3, 2, 1]]), ["x", "y"], tmp_path / "labels.png", "t")
    plots.label_noise({"train": 0.4, "teacher_0": 0.38}, np.eye(3), ["0", "1", "2"], tmp_path / "noise.png")
    grid = {"coordinates": [-1, 0, 1], "loss": [[3, 2, 3], [2, 1, 2], [3, 2, 9]], "split": "test"}
    plots.loss_landscape({"a": grid, "b": grid}, tmp_path / "land.png")
    images = np.random.default_rng(0).random((3, 1, 8, 8), dtype=np.float32)
    plots.label_issue_grid(images, ["#1: 3 -> 8\n0.01"] * 3, tmp_path / "issues.png", columns=2)
    plots.label_issue_grid(np.repeat(images, 3, axis=1), ["a", "b", "c"], tmp_path / "issues_rgb.png")
    for name in ("curves", "eps", "cert", "bars", "labels", "noise", "land", "issues", "issues_rgb"):
        assert (tmp_path / f"{name}.png").read_bytes().startswith(PNG_SIGNATURE), name


def test_number_formats():
    assert eps_label(8 / 255) == "8/255" and eps_label(0.5) == "0.5" and eps_label(1.0) == "1"
    assert fmt(None) == "-" and fmt(1234) == "1,234" and fmt(0.12345) == "0.123"
