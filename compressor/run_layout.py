"""Where every file of a run directory lives: the one place that spells a run-directory path.

``RunLayout(run_dir)`` gives absolute paths; ``RunLayout()`` (no root) gives the same paths relative to the run
directory, which is how stages name their outputs and records name a model file. Only the standard library is
imported, so the command line and the report use it cheaply. The layout (``*``: one per teacher or model):

=================================================  ==============================================================
``spec``                   spec.yaml               the resolved spec of the run
``data_labels``            data/labels.npz         labels as trained on (noisy train/val), noise masks
``data_summary``           data/summary.json       data facts (``compressor.pipeline.records.DataSummary``)
``label_issues``           data/label_issues.csv   training labels the audit flags, worst first
``label_audit``            data/label_audit.json   the audit's summary (``compressor.pipeline.records.LabelAudit``)
``teacher_weights(i)``     teachers/teacher_*.safetensors   a teacher; its summary (written last) beside it
``teacher_onnx(i)``        teachers/teacher_*.onnx   an existing ONNX teacher (instead of the safetensors file)
``teacher_summary(i)``     teachers/teacher_*.json
``final_student``          student.safetensors     the final student (by default the averaged one when averaging is on)
``last_student``           student/last.safetensors    the live student (its last epoch; select: best_val, its best)
``averaged_student``       student/averaged.safetensors    the averaged student, when it is not the final one
``peer``                   student/peer.safetensors    CMD's mutual peer
``student_summary``        student/summary.json    the distillation's summary and histories
``baselines``              baselines/*.safetensors     extra models certified beside the student (user's)
``metrics``                metrics.json            every model's clean-test metrics
``certify_record(name)``   certify/*.json          robustness figures per model
``certificate``            certificate.json        the final student's certificate and gate
``onnx``, ``export_report``   student.onnx, export.json    the exported model (int8 beside it) and its report
``deploy_onnx(stem)``      deploy/*.onnx           where ``compressor export`` writes by default
``report_md``, ``report_html``, ``plots``   report.md, report.html, plots/   the report
``stage_marker(stage)``    .compressor/stages/*.json   completion markers (key, seconds, summary), written last
``checkpoint(stage, name)``   .compressor/checkpoints/<stage>/   epoch checkpoints (removed once a stage is done)
``view_pool``              .compressor/cache/view_pool/   the teachers' outputs for stored views, for later runs
``staging(stage)``         .compressor/staging/<stage>/   a stage's artifacts before they are published together
``publish_journal(stage)``    .compressor/publish/<stage>.json   the swap under way (replayed by the next run)
``error_log``              logs/error.log          the traceback of an internal error (exit status 1)
=================================================  ==============================================================
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path


def _at(*parts: str) -> property:
    return property(lambda self: self.root.joinpath(*parts), doc=f"``{'/'.join(parts)}`` in the run directory")


def _in(folder: str, name: str) -> Callable[..., Path]:
    def path(self, key: int | str) -> Path:
        return self.root / folder / name.format(key)

    path.__doc__ = f"``{folder}/{name.format('<key>')}`` in the run directory"
    return path


class RunLayout:
    """The paths of one run directory (relative ones when ``root`` is omitted); see the module docstring."""

    spec = _at("spec.yaml")
    data_labels = _at("data", "labels.npz")
    data_summary = _at("data", "summary.json")
    label_issues = _at("data", "label_issues.csv")
    label_audit = _at("data", "label_audit.json")
    final_student = _at("student.safetensors")
    last_student = _at("student", "last.safetensors")
    averaged_student = _at("student", "averaged.safetensors")
    peer = _at("student", "peer.safetensors")
    student_summary = _at("student", "summary.json")
    baselines = _at("baselines")
    metrics = _at("metrics.json")
    certificate = _at("certificate.json")
    onnx = _at("student.onnx")
    export_report = _at("export.json")
    report_md = _at("report.md")
    report_html = _at("report.html")
    plots = _at("plots")
    checkpoints = _at(".compressor", "checkpoints")
    view_pool = _at(".compressor", "cache", "view_pool")
    staging_root = _at(".compressor", "staging")
    publish_root = _at(".compressor", "publish")
    error_log = _at("logs", "error.log")
    teacher_weights = _in("teachers", "teacher_{}.safetensors")
    teacher_onnx = _in("teachers", "teacher_{}.onnx")  # an existing ONNX teacher, installed into the run
    teacher_summary = _in("teachers", "teacher_{}.json")
    certify_record = _in("certify", "{}.json")
    deploy_onnx = _in("deploy", "{}.onnx")
    stage_marker = _in(".compressor/stages", "{}.json")
    staging = _in(".compressor/staging", "{}")
    publish_journal = _in(".compressor/publish", "{}.json")

    def __init__(self, root: str | Path = ""):
        self.root = Path(root)

    def teacher_file(self, index: int, onnx: bool) -> Path:
        """The model file of teacher ``index``: ``teacher_onnx`` for an ONNX teacher, else ``teacher_weights``."""
        return self.teacher_onnx(index) if onnx else self.teacher_weights(index)

    def checkpoint(self, stage: str, name: str) -> Path:
        """``.compressor/checkpoints/<stage>/<name>``."""
        return self.checkpoints / stage / name

    def folders(self) -> list[Path]:
        """Every folder the run writes into below the root (the root itself excluded)."""
        return [self.data_labels.parent, self.teacher_weights(0).parent, self.last_student.parent,
                self.certify_record("x").parent, self.plots, self.deploy_onnx("x").parent, self.error_log.parent,
                self.root / ".compressor"]

    def relative(self, path: Path) -> str:
        """``path`` inside the run directory, as the POSIX string records store (e.g. ``student/last.safetensors``)."""
        return Path(path).relative_to(self.root).as_posix()

    def is_run(self) -> bool:
        """Whether the folder holds a run (its spec and data summary), e.g. the run a checkpoint belongs to."""
        return self.spec.is_file() and self.data_summary.is_file()
