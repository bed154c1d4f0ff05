"""Where every file of a run directory lives: the one place that spells a run-directory path.

``RunLayout(run_dir)`` gives absolute paths; ``RunLayout()`` (no root) gives the same paths relative to the run
directory, which is how stages name their outputs and how records name a model file. Nothing here reads or writes
a file, and only the standard library is imported, so the command line and the report can use it cheaply.

Layout of ``compressor run``'s output folder (``*`` = one per teacher or model)::

    spec.yaml                      the resolved spec of the run
    data/labels.npz, summary.json  labels as trained on (noisy train/val), noise masks; data facts
    teachers/teacher_*.safetensors, teacher_*.json    each teacher's weights; its summary (written last)
    student.safetensors            the final student (averaged when averaging is on)
    student/last.safetensors, peer.safetensors, summary.json   last-epoch student, mutual peer, distillation summary
    metrics.json                   every model's clean-test metrics
    certify/*.json, certificate.json   robustness figures per model; the final student's certificate
    student.onnx, student.int8.onnx, export.json      the exported model(s) and the export report
    report.md, report.html, plots/*.png               the report
    .compressor/stages/*.json      completion markers; checkpoints/ (epoch checkpoints), cache/ (teacher logits)
"""

from __future__ import annotations

from pathlib import Path

INTERNAL = ".compressor"


class RunLayout:
    """The paths of one run directory (relative ones when ``root`` is omitted)."""

    def __init__(self, root: str | Path = ""):
        self.root = Path(root)

    def relative(self, path: Path) -> str:
        """``path`` inside the run directory, as the POSIX string records store (e.g. ``student/last.safetensors``)."""
        return Path(path).relative_to(self.root).as_posix()

    @property
    def spec(self) -> Path:
        return self.root / "spec.yaml"

    @property
    def data_labels(self) -> Path:
        return self.root / "data" / "labels.npz"

    @property
    def data_summary(self) -> Path:
        return self.root / "data" / "summary.json"

    def teacher_weights(self, index: int) -> Path:
        return self.root / "teachers" / f"teacher_{index}.safetensors"

    def teacher_summary(self, index: int) -> Path:
        return self.root / "teachers" / f"teacher_{index}.json"

    @property
    def final_student(self) -> Path:
        return self.root / "student.safetensors"

    @property
    def last_student(self) -> Path:
        return self.root / "student" / "last.safetensors"

    @property
    def peer(self) -> Path:
        return self.root / "student" / "peer.safetensors"

    @property
    def student_summary(self) -> Path:
        return self.root / "student" / "summary.json"

    @property
    def baselines(self) -> Path:
        """Folder of extra ``*.safetensors`` models certified beside the student (put there by the user)."""
        return self.root / "baselines"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.json"

    def certify_record(self, model: str) -> Path:
        return self.root / "certify" / f"{model}.json"

    @property
    def certificate(self) -> Path:
        return self.root / "certificate.json"

    @property
    def onnx(self) -> Path:
        return self.root / "student.onnx"

    @property
    def export_report(self) -> Path:
        return self.root / "export.json"

    def deploy_onnx(self, stem: str) -> Path:
        """Where ``compressor export`` writes a model by default (``deploy/<stem>.onnx``)."""
        return self.root / "deploy" / f"{stem}.onnx"

    @property
    def report_md(self) -> Path:
        return self.root / "report.md"

    @property
    def report_html(self) -> Path:
        return self.root / "report.html"

    @property
    def plots(self) -> Path:
        return self.root / "plots"

    def stage_marker(self, stage: str) -> Path:
        """Completion marker of a stage (its key, seconds and summary), written after its outputs."""
        return self.root / INTERNAL / "stages" / f"{stage}.json"

    @property
    def checkpoints(self) -> Path:
        """Epoch checkpoints of interrupted stages (removed once a stage is done)."""
        return self.root / INTERNAL / "checkpoints"

    def checkpoint(self, stage: str, name: str) -> Path:
        return self.checkpoints / stage / name

    @property
    def teacher_logit_cache(self) -> Path:
        """Derived data a later run may reuse: the teachers' logits over the training split (see ``teacher_cache``)."""
        return self.root / INTERNAL / "cache" / "teacher_logits.npy"

    def is_run(self) -> bool:
        """Whether the folder holds a run (its spec and data summary), e.g. the run a checkpoint belongs to."""
        return self.spec.is_file() and self.data_summary.is_file()
