"""The typed records stages hand each other through the run directory (data, teacher and student summaries).

A stage writes its record as JSON (``Record.write``, atomically); a later stage, a later run or the report reads it
back (``Record.read``). The JSON keys are the field names, in field order; keys a record does not know are ignored.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from compressor.io import read_json, write_json


@dataclass
class Record:
    """Base of the records: JSON in and out."""

    def write(self, path: str | Path) -> None:
        """Atomically write the record as JSON."""
        write_json(path, asdict(self))

    @classmethod
    def read(cls, path: str | Path):
        """The record stored at ``path``.

        Raises:
            OSError, ValueError: the file is missing or is not this record's JSON.
        """
        raw = read_json(path)
        if not isinstance(raw, dict):
            raise ValueError(f"{path}: not a {cls.__name__} record")
        try:
            return cls(**{f.name: raw[f.name] for f in fields(cls) if f.name in raw})
        except TypeError as exc:  # a required field is missing
            raise ValueError(f"{path}: not a {cls.__name__} record ({exc})") from None


@dataclass
class DataSummary(Record):
    """``data/summary.json``: what the data stage loaded (source, task, classes, image shape, pixel window, statistics,
    noise)."""

    source: str
    task: str
    classes: list[str]
    image: list[int]  # [C, H, W]
    mean: list[float]
    std: list[float]
    noise: dict[str, Any]  # kind, rate and the realised rate per split
    groups: int
    fingerprint: str
    pixels: dict[str, Any] | None = None  # the pixel type and window ({"dtype", "window"}; None: uint8 0..255)


@dataclass
class TeacherSummary(Record):
    """``teachers/teacher_<i>.json``: one trained teacher (written after its weights: its presence means finished)."""

    key: str  # the teachers stage's key when it was trained
    name: str
    arch: str
    params: int
    subset_size: int
    subset_noise_rate: float
    messy_rate: float
    seconds: float
    rank: int  # the process that trained it
    history: dict[str, list[float]]  # per epoch: training loss / accuracy / lr, validation loss / accuracy
    # which epoch's weights were kept and their validation figures (``History.selection``; an existing teacher used
    # as it is: its validation figures only; empty without a validation split). The test split is never read
    # here: the metrics stage measures the saved teachers on it.
    selection: dict[str, Any] = field(default_factory=dict)
    precision: str = "fp32"  # the arithmetic it trained in (``training.precision`` resolved on the device)
    origin: str = "trained"  # "trained" (from scratch or a pretrained start), "finetuned" or "file" (used as is)
    source: str = ""  # the file it came from (teachers.models) or started from (pretrained), as the spec names it
    weights_sha256: str = ""  # of teacher_<i>.safetensors as written: a teacher whose file changed is retrained


@dataclass
class LabelAudit(Record):
    """``data/label_audit.json``: the label audit (``data/label_issues.csv`` beside it holds the flagged rows)."""

    samples: int  # training rows audited
    flagged: int
    out_of_sample: float  # share of rows whose probabilities come from teachers that never saw them
    method: str  # how the rows were flagged (cleanlab's filter)
    seconds: float
    precision: float | None  # against the injected noise mask (None without synthetic noise)
    recall: float | None


@dataclass
class StudentSummary(Record):
    """``student/summary.json``: the distillation's outcome (which student is final, why, histories, the models).

    The test split is never read here: the metrics stage measures the files of ``models`` on it.
    """

    arch: str
    params: int
    final: str  # "student_averaged" or "student"
    averaged_checkpoints: int
    teachers_used: int
    teacher_logits: str | None  # "view pool", "live" (teachers run on every batch) or None (no teacher)
    world_size: int
    peer_arch: str | None
    peer_params: int | None
    seconds: float
    history: dict[str, list[float]]
    view_pool: dict[str, Any] | None = None  # views, storage, origin, build seconds, bytes (None: no pool)
    models: dict[str, str] = field(default_factory=dict)  # model name -> weights file (relative to the run directory)
    val: dict[str, dict[str, Any]] = field(default_factory=dict)  # validation loss / accuracy per model
    selection: dict[str, Any] = field(default_factory=dict)  # the live student's kept epoch; how the final was chosen
    precision: str = "fp32"  # the arithmetic it trained in (``training.precision`` resolved on the device)
    label_issues: str = "report"  # what was done with the audit's flagged rows (under auto: the mode kept)
    # under data.label_issues: auto, each mode's final model on the validation split (None: one mode trained)
    label_issues_choice: dict[str, dict[str, Any]] | None = None
    changed_rows: int = 0  # training rows dropped or relabelled because of it
