"""The run report: ``report.md``, a self-contained ``report.html`` and PNG plots under ``plots/``.

Everything comes from the files the stages wrote (``metrics.json``, ``data/summary.json``, ``data/labels.npz``,
``teachers/*.json``, ``student/summary.json``, ``certificate.json``, ``certify/*.json``, ``export.json``), except the
confusion matrix, which runs the final student on the test split once. Parts whose files are missing (e.g. no
certification) are left out, so the report works for any run that finished its metrics stage.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml

import compressor
from compressor.io import read_json, write_text
from compressor.report import plots
from compressor.report.confusion import confusion_counts, noise_transition
from compressor.report.document import Bullets, Document, Heading, Image, Paragraph, Table, render_html, render_markdown
from compressor.run_layout import RunLayout
from compressor.task import Task

PLOTS_DIR = RunLayout().plots.as_posix()  # how the report refers to its plots (relative to the run directory)


def fmt(value, digits: int = 3) -> str:
    """A number for a table cell ("-" when missing)."""
    if value is None:
        return "-"
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return f"{value:,}"
    return f"{value:.{digits}f}"


def eps_label(eps: float) -> str:
    """eps as a multiple of 1/255 when it is one (``8/255``), else as a number."""
    k = eps * 255
    return f"{round(k):g}/255" if abs(k - round(k)) < 1e-6 and 1 <= k < 255 else f"{eps:.4g}"


def _read(path: Path):
    return read_json(path) if path.exists() else None


def _plot(doc: Document, run_dir: Path, name: str, caption: str) -> Path:
    """Add the plot ``name`` to ``doc`` as an image and return the path its PNG is to be drawn to."""
    doc.add(Image(f"{PLOTS_DIR}/{name}", caption))
    return run_dir / PLOTS_DIR / name


def load_run(run_dir: Path) -> dict:
    """The JSON files of a run directory (None where absent)."""
    layout = RunLayout(run_dir)
    spec = (yaml.safe_load(layout.spec.read_text()) if layout.spec.exists() else None) or {}
    certified = (spec.get("robustness") or {}).get("enabled", True)
    certificate = _read(layout.certificate) if certified else None  # stale when certification is off
    audited = (spec.get("distillation") or {}).get("alpha", 1.0) > 0  # no teachers, no audit
    records = {}
    if certificate:
        for name in [certificate["model"]["name"], *certificate["comparison"]]:
            record = _read(layout.certify_record(name))
            if record:
                records[name] = record
    metrics = read_json(layout.metrics)
    return {
        "name": spec.get("name") or run_dir.name,
        "metrics": metrics,
        "data": read_json(layout.data_summary),
        "teachers": [read_json(layout.teacher_summary(i)) for i in range(len(metrics["teachers"]))],
        "student": read_json(layout.student_summary),
        "certificate": certificate,
        "records": records,
        "export": _read(layout.export_report),
        "label_audit": _read(layout.label_audit) if audited else None,  # stale when a later run had no teachers
    }


MODEL_COLUMNS = ["model", "role", "arch", "params", "train noise", "accuracy", "precision", "recall", "F1", "AUC"]


def _grouped(metrics: dict) -> bool:
    """Whether the test split has group labels (GroupDistil): the models table then shows worst-group accuracy."""
    return any("worst_group_accuracy" in m for m in metrics["test"].values())


def teacher_role(teacher: dict) -> str:
    """A teacher's role in the models table: trained here, started from weights, fine-tuned or given as a file."""
    origin = teacher["origin"]
    if origin == "file":
        return f"teacher (given: {Path(teacher['source']).name})"
    if origin == "finetuned":
        return f"teacher (fine-tuned from {Path(teacher['source']).name})"
    return f"teacher (pretrained start: {Path(teacher['source']).name})" if teacher.get("source") else "teacher"


def _model_rows(run: dict) -> list[list[str]]:
    metrics = run["metrics"]
    grouped = _grouped(metrics)

    def figures(m: dict) -> list[str]:
        cells = [fmt(m["accuracy"]), fmt(m["precision"]), fmt(m["recall"]), fmt(m["f1"]), fmt(m["auc"])]
        return cells + ([fmt(m.get("worst_group_accuracy"))] if grouped else [])

    rows = []
    for t in metrics["teachers"]:
        rows.append([t["name"], teacher_role(t), t["arch"], fmt(t["params"]), fmt(t["subset_noise_rate"]),
                     *figures(t["test"])])
    noise = metrics["noise"]["train"]["noise_rate"]
    student = metrics["student"]
    kept = ((metrics.get("validation") or {}).get("selection") or {}).get("student", {})
    live = f"student (best val epoch {kept['epoch']})" if kept.get("select") == "best_val" else "student (last epoch)"
    roles = {"student": live, "student_averaged": "student (averaged)", "peer": "peer (mutual)"}
    for name, m in metrics["test"].items():
        if name.startswith("teacher_"):
            continue
        role = roles.get(name, "baseline") + (", final" if name == metrics["final_model"] else "")
        arch = (student.get("peer_arch") or student["arch"]) if name == "peer" else student["arch"]
        params = student.get("peer_params") if name == "peer" else student["params"]
        rows.append([name, role, arch, fmt(params), fmt(noise), *figures(m)])
    return rows


def _noise_section(run: dict, run_dir: Path, doc: Document) -> None:
    data, metrics = run["data"], run["metrics"]
    noise = data["noise"]
    doc.add(Heading("Label noise"))
    injected = (f"Synthetic {noise['kind']} noise at rate {noise['rate']} was injected into the training and "
                "validation labels; the test labels are clean." if noise["kind"] != "none"
                else "No synthetic noise was injected; the labels are used as given (their own noise is unknown).")
    doc.add(Paragraph(injected))
    splits = ("train", "val", "test")
    rows = [[split, fmt(noise[split]["samples"]), fmt(noise[split]["noise_rate"])] for split in splits]
    rows += [[f"{t['name']} subset", fmt(t["subset_size"]), fmt(t["subset_noise_rate"])] for t in metrics["teachers"]]
    doc.add(Table(["data", "samples", "share of wrong labels"], rows))
    rates = {split: noise[split]["noise_rate"] for split in splits}
    rates.update({t["name"]: t["subset_noise_rate"] for t in metrics["teachers"]})
    transition = None
    labels_file = RunLayout(run_dir).data_labels
    if not Task(data["task"]).multilabel and labels_file.exists():
        with np.load(labels_file, allow_pickle=False) as arrays:
            if "train_clean_labels" in arrays:
                transition = noise_transition(arrays["train_clean_labels"], arrays["train_labels"],
                                              len(data["classes"]))
    caption = "Realised noise rate per split and teacher subset" + (
        "; observed transition from clean to given training labels" if transition is not None else "")
    plots.label_noise(rates, transition, data["classes"], _plot(doc, run_dir, "label_noise.png", caption))


ISSUES_SHOWN = 24  # worst flagged training images drawn in the label-audit section


def _label_audit_section(run: dict, run_dir: Path, doc: Document, issues: dict | None) -> None:
    audit = run["label_audit"]
    if audit is None:
        return
    doc.add(Heading("Label audit"))
    mode = run["student"].get("label_issues", "report")
    changed = run["student"].get("changed_rows", 0)
    action = {"report": "distillation used every label as given",
              "drop": f"distillation left the {changed} flagged rows out",
              "relabel": f"distillation used the suggested label on the {changed} flagged rows"}[mode]
    choice = run["student"].get("label_issues_choice")
    if choice:
        scores = ", ".join(f"{name} {fmt(figures['accuracy'])}" for name, figures in choice.items())
        mode = f"auto, which kept {mode} on the validation split (accuracy {scores})"
    doc.add(Paragraph(
        f"{fmt(audit['flagged'])} of {fmt(audit['samples'])} training labels are flagged as likely wrong "
        f"({audit['method']}, on the probabilities of the teachers that never saw each sample; "
        f"{fmt(audit['out_of_sample'])} of the samples have such teachers, the others use the whole ensemble). "
        f"They are listed worst first in `{RunLayout().label_issues.as_posix()}`; data.label_issues is {mode}: "
        f"{action}."))
    if audit.get("precision") is not None:
        doc.add(Table(["figure", "value"], [["precision against the injected noise", fmt(audit["precision"])],
                                            ["recall of the injected noise", fmt(audit["recall"])]]))
    if issues is not None and len(issues["images"]):
        caption = "The worst flagged training images: row index, given label -> suggested label, label quality"
        plots.label_issue_grid(issues["images"], issues["captions"], _plot(doc, run_dir, "label_issues.png", caption))


def _confusion_section(run: dict, run_dir: Path, doc: Document, logits: np.ndarray | None, labels) -> None:
    if logits is None:
        return
    data = run["data"]
    final = run["metrics"]["final_model"]
    task = Task(data["task"])
    counts = confusion_counts(logits, labels, task)
    doc.add(Heading("Confusion matrix"))
    path = _plot(doc, run_dir, "confusion_matrix.png", f"{final} on the clean test labels")
    draw = plots.label_counts if task.multilabel else plots.confusion_matrix
    draw(counts, data["classes"], path, f"{final} on the test split")


def _attack_rows(records: dict) -> list[list[str]]:
    rows = []
    for name, record in records.items():
        r = record["results"]
        clean = r["clean"]
        for norm, methods in (r.get("attacks") or {}).items():
            for method, entries in methods.items():
                for e in entries:
                    rows.append([name, method.upper(), "L-inf" if norm == "linf" else "L2", eps_label(e["eps"]),
                                 fmt(clean["precision"]), fmt(clean["recall"]), fmt(clean["f1"]),
                                 fmt(e["precision"]), fmt(e["recall"]), fmt(e["f1"]),
                                 fmt(clean["accuracy"]), fmt(e["accuracy"]), fmt(e["conditional_accuracy"])])
    return rows


def _robustness_section(run: dict, run_dir: Path, doc: Document) -> None:
    certificate, records = run["certificate"], run["records"]
    if not certificate:
        doc.add(Heading("Robustness"), Paragraph("Not certified in this run (robustness.enabled is false)."))
        return
    params = certificate["parameters"]
    final = certificate["model"]["name"]
    doc.add(Heading("Robustness"))
    doc.add(Paragraph(
        f"Certified on {certificate['data']['samples']} of {certificate['data']['test_samples']} test samples "
        f"(seed {certificate['seed']}). Perturbation sizes are in pixel units of images scaled to [0, 1]; the "
        "models contain their normalisation. Conditional accuracy = accuracy on perturbed inputs among the samples "
        "whose clean input is classified correctly."))
    attacked = {n: r for n, r in records.items() if r["results"].get("attacks")}
    if attacked:
        a = params["attacks"]
        doc.add(Heading("Adversarial attacks", 3), Paragraph(
            f"FGSM: one step of size eps. PGD: {a['steps']} steps of "
            + (f"{a['step_size']:g}" if a["step_size"] else f"{a['step_scale']:g} * eps / {a['steps']}")
            + f", {a['restarts']} restart(s), {'random' if a['random_start'] else 'clean'} start, worst case kept per "
            "sample. Multi-label models are attacked through their per-class loss."))
        doc.add(Table(["model", "attack", "norm", "eps", "P before", "R before", "F1 before", "P after", "R after",
                       "F1 after", "acc before", "acc after", "cond. acc"], _attack_rows(attacked),
                      "Macro precision / recall / F1 before and after attack (the shape of RoS-KD Table II)"))
        plots.accuracy_vs_eps({n: r["results"]["attacks"] for n, r in attacked.items()},
                              {n: r["results"]["clean"]["accuracy"] for n, r in attacked.items()},
                              _plot(doc, run_dir, "accuracy_vs_eps.png", "Accuracy under attack against eps"))
    corrupted = {n: r["results"]["corruptions"] for n, r in records.items() if r["results"].get("corruptions")}
    if corrupted:
        shown = final if final in corrupted else next(iter(corrupted))
        c = corrupted[shown]
        sev = c["severities"]
        doc.add(Heading("Common corruptions", 3),
                Table(["model", "mCA", "mCA (conditional)"],
                      [[n, fmt(v["mca"]), fmt(v["mca_conditional"])] for n, v in corrupted.items()],
                      "Mean corruption accuracy over every corruption and severity"),
                Table(["corruption", *[f"severity {s}" for s in sev], "mean", "mean conditional"],
                      [[name, *[fmt(a) for a in row["accuracy"]], fmt(row["mean_accuracy"]),
                        fmt(np.mean([v for v in row["conditional_accuracy"] if v is not None])
                            if any(v is not None for v in row["conditional_accuracy"]) else None)]
                       for name, row in c["table"].items()],
                      f"Accuracy of {shown} per corruption and severity"))
        plots.corruption_bars(corrupted, _plot(doc, run_dir, "corruptions.png",
                                               "Accuracy per corruption (mean over severities)"))
    smoothed = {n: r["results"]["smoothing"] for n, r in records.items() if r["results"].get("smoothing")}
    if smoothed:
        first = next(iter(smoothed.values()))
        doc.add(Heading("Randomized-smoothing certificate", 3), Paragraph(
            f"Cohen et al. (2019) CERTIFY with sigma = {first['sigma']:g}, n0 = {first['n0']}, n = {first['n']}, "
            f"alpha = {first['alpha']:g} on {first['samples']} test samples: the smoothed classifier's answer is "
            "guaranteed constant within the L2 radius sigma * Phi^-1(pA_lower) (one-sided Clopper-Pearson bound), "
            f"with probability at least {1 - first['alpha']:g}; it abstains when pA_lower < 1/2. Abstentions count "
            "as wrong."
            + (" For this multi-label task the smoothed output is the whole predicted label set, and a sample counts "
               "as correct only when the set is exactly right." if Task(run["data"]["task"]).multilabel else "")))
        radii = [e["radius"] for e in first["certified_accuracy"]]
        rows = [[n, *[fmt(e["accuracy"]) for e in s["certified_accuracy"]], fmt(s["abstain_rate"]),
                 fmt(s["median_radius"]), fmt((s.get("predict") or {}).get("accuracy"))] for n, s in smoothed.items()]
        doc.add(Table(["model", *[f"r = {r:g}" for r in radii], "abstain", "median radius", "PREDICT acc"], rows,
                      "Certified accuracy at L2 radius r"))
        plots.certified_accuracy_curve(smoothed, _plot(doc, run_dir, "certified_accuracy.png",
                                                       "Certified accuracy against the L2 radius"))
    surfaces = {n: r["results"]["landscape"] for n, r in records.items() if r["results"].get("landscape")}
    if surfaces:
        first = next(iter(surfaces.values()))
        doc.add(Heading("Loss landscape", 3), Paragraph(
            f"Loss on {first['samples']} {first['split']} images along two random directions, filter-normalised to "
            "the weights (Li et al. 2018), as in RoS-KD Figure 4. A wider, flatter basin around the trained weights "
            "(red cross) indicates a smoother model."))
        plots.loss_landscape(surfaces, _plot(doc, run_dir, "loss_landscape.png",
                                             "Loss contours around the trained weights"))
    gate = certificate["gate"]
    doc.add(Heading("Gate", 3))
    if gate["checks"]:
        doc.add(Paragraph(f"Overall: {'PASS' if gate['passed'] else 'FAIL'}"),
                Table(["threshold", "required", "measured", "result"],
                      [[c["name"], fmt(c["threshold"]), fmt(c["value"]), "PASS" if c["passed"] else "FAIL"]
                       for c in gate["checks"]]))
    else:
        doc.add(Paragraph("No thresholds set (robustness.gate is empty)."))


def _validation_section(run: dict, doc: Document) -> None:
    """What each training kept and every model's figures on the validation labels (absent without a val split)."""
    metrics = run["metrics"]
    validation = metrics.get("validation") or {}
    if not validation.get("models"):
        return
    noise = metrics["noise"]["val"]["noise_rate"]
    doc.add(Heading("Validation", 3), Paragraph(
        f"{validation['samples']} validation samples with their labels as given (share of wrong labels "
        f"{fmt(noise)}). Every decision of the run is taken on them: which epoch each training keeps (select), "
        "early stopping, the final student, the int8 gate and the ONNX parity check. The test split is only "
        f"reported. Final model: {validation.get('final', metrics['final_model'])}."))
    rows = []
    for name, figures in validation["models"].items():
        kept = validation.get("selection", {}).get(name, {})
        rows.append([name, kept.get("select", "-"), fmt(kept.get("epoch")), fmt(kept.get("epochs_run")),
                     ("yes" if kept["stopped_early"] else "no") if "stopped_early" in kept else "-",
                     fmt(figures["loss"]), fmt(figures["accuracy"])])
    doc.add(Table(["model", "select", "kept epoch", "epochs run", "stopped early", "val loss", "val accuracy"], rows,
                  "Validation figures of the models as kept"))


def _export_section(run: dict, doc: Document) -> None:
    export = run["export"]
    if not export:
        return
    images = (export.get("parity") or {}).get("images", "the test split")
    doc.add(Heading("Export"), Paragraph(f"{export.get('onnx')} (opset {export.get('opset')}), parity-checked "
                                         f"against PyTorch in onnxruntime on {images}."))
    for key, value in export.items():
        if key == "metadata" or not isinstance(value, dict):
            continue
        rows = [[k.replace("_", " "), fmt(v, 6) if isinstance(v, float) else str(v)]
                for k, v in value.items() if v is None or isinstance(v, (str, int, float, bool))]
        doc.add(Table(["figure", "value"], rows, key.replace("_", " ")))


def build_document(run: dict, run_dir: Path, final_logits: np.ndarray | None, test_labels,
                   issues: dict | None = None) -> Document:
    """Assemble the report and draw its plots into ``run_dir/plots`` (``issues``: see ``write_report``)."""
    metrics, data = run["metrics"], run["data"]
    doc = Document(f"compressor report: {run['name']}")
    certificate = run["certificate"]
    facts = [
        f"data: {data['source']} ({data['task']}, {len(data['classes'])} classes, "
        f"{'x'.join(map(str, data['image']))} images), fingerprint {data['fingerprint'][:16]}",
        f"teachers: {len(metrics['teachers'])}; student: {metrics['student']['arch']}; final model: "
        f"{metrics['final_model']}",
        f"compressor {compressor.__version__}",
    ]
    final = metrics["test"][metrics["final_model"]]
    facts.append(f"final model on clean test labels: accuracy {fmt(final['accuracy'])}, macro F1 {fmt(final['f1'])}")
    if certificate:
        gate = certificate["gate"]
        facts.append(f"certificate: model sha256 {certificate['model']['sha256'][:16]}, gate "
                     + ("PASS" if gate["passed"] else "FAIL") + ("" if gate["checks"] else " (no thresholds)"))
    doc.add(Bullets(facts))

    columns = MODEL_COLUMNS + (["worst group"] if _grouped(metrics) else [])
    doc.add(Heading("Models"), Table(columns, _model_rows(run),
                                     "Clean test labels; macro precision / recall / F1; mean one-vs-rest AUC"))
    _noise_section(run, run_dir, doc)
    _label_audit_section(run, run_dir, doc, issues)

    histories = {t["name"]: t["history"] for t in run["teachers"]}
    histories["student"] = run["student"]["history"]
    validation = metrics.get("validation") or {}
    kept = {name: s["epoch"] for name, s in validation.get("selection", {}).items() if "epoch" in s}
    caption = ("Loss and accuracy on the noisy training labels per epoch (teachers: cross-entropy; student: its "
               "distillation objective)")
    if validation.get("curves"):
        caption += "; below, on the validation labels (a dot marks the epoch whose weights each model kept)"
    doc.add(Heading("Training"))
    plots.training_curves(histories, _plot(doc, run_dir, "training_curves.png", caption), kept)
    _validation_section(run, doc)
    _confusion_section(run, run_dir, doc, final_logits, test_labels)
    _robustness_section(run, run_dir, doc)
    _export_section(run, doc)
    return doc


def write_report(run_dir: str | Path, final_logits: np.ndarray | None = None, test_labels=None,
                 issues: dict | None = None) -> dict:
    """Write ``plots/*.png``, ``report.md`` and ``report.html`` into ``run_dir``; stale plots are removed.

    Args:
        run_dir: a run directory whose metrics stage finished.
        final_logits: the final student's test logits (for the confusion matrix; left out when None).
        test_labels: the clean test labels matching ``final_logits``.
        issues: the label audit's worst rows to draw: ``images`` (``float [M, C, H, W]`` in [0, 1], through the
            data set's window) and one caption each
            (``captions``); left out when None.

    Returns:
        ``{"report": [...], "plots": [...]}`` (paths relative to ``run_dir``).
    """
    run_dir = Path(run_dir)
    layout = RunLayout(run_dir)
    run = load_run(run_dir)
    doc = build_document(run, run_dir, final_logits, test_labels, issues)
    used = {b.path for b in doc.blocks if isinstance(b, Image)}
    for stale in (run_dir / PLOTS_DIR).glob("*.png"):
        if f"{PLOTS_DIR}/{stale.name}" not in used:
            stale.unlink()
    write_text(layout.report_md, render_markdown(doc))
    write_text(layout.report_html, render_html(doc, run_dir))
    return {"report": [layout.relative(layout.report_md), layout.relative(layout.report_html)], "plots": sorted(used)}
