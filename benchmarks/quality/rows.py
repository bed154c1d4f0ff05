"""The rows of the quality benchmark: one spec each, grouped by the teachers they share.

Every row is the same base spec (small models on the built-in digits) plus a few fields. Rows whose data, subsets
and teachers sections are identical form one *layout* and run one after another in one run directory, so the
pipeline's stage keys train their teachers once and every row after the first only re-runs distillation.

| row                  | layout  | spec on top of the base                                                         |
|----------------------|---------|---------------------------------------------------------------------------------|
| Baseline I           | none    | ``method.preset: baseline_1`` (student alone, no teacher trained)               |
| Baseline II          | single  | ``baseline_2``: one teacher (``wrn16_2``, the largest) on all data, Hinton KD   |
| Messy collaboration  | single  | Baseline II + MC-S: ``distillation.messy.rate: 0.5`` (the paper's best rate)    |
| Baseline III         | full    | ``baseline_3``: 3 teachers on all data (overlap 1), equal weights               |
| Baseline IV          | full    | ``baseline_4``: as III with adaptive per-sample weights                         |
| Baseline V           | overlap | ``baseline_5``: 3 teachers on overlapping subsets (0.4), exponential weights    |
| RoS-KD               | overlap | ``roskd``: Baseline V + smooth parameter averaging                              |
| RoS-KD + CMD         | overlap | RoS-KD + CMD-P entropy gate on the teachers (``eta 2``, ``b2 -4``)              |
| GroupDistil          | groups  | RoS-KD + GroupDistil (``eta_w 0.01``) on the group-imbalanced digits            |
| RoS-KD (group data)  | groups  | RoS-KD on the same group-imbalanced digits: GroupDistil's reference             |
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

from compressor.spec.presets import PRESETS

TEACHER_ARCHS = ["small_cnn_wide", "wrn16_2", "small_cnn"]
SINGLE_TEACHER = "wrn16_2"  # Baseline II's teacher: the largest (the paper: DenseNet-121)
STUDENT_ARCH = "tiny_cnn"
NOISE_SETTINGS = {
    "symmetric-40": {"kind": "symmetric", "rate": 0.4},
    "pairflip-30": {"kind": "pairflip", "rate": 0.3},
}
MAIN_ROWS = ("Baseline I", "Baseline II", "Baseline III", "Baseline IV", "Baseline V", "RoS-KD", "RoS-KD + CMD",
             "Messy collaboration", "GroupDistil")
GROUP_REFERENCE = "RoS-KD (group data)"


def _training(epochs: int) -> dict:
    """One training run: SGD with momentum and cosine decay, light crop augmentation (as in the quickstart)."""
    return {"epochs": epochs, "batch_size": 64,
            "optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 5.0e-4},
            "schedule": {"name": "cosine"}, "augment": {"crop_padding": 1}}


def base_spec(noise: str, seed: int, teacher_epochs: int = 20, student_epochs: int = 30,
              view_pool: int | str = "auto") -> dict:
    """The raw spec every row starts from (ONNX export off: the benchmark measures accuracy only); ``view_pool``:
    the teachers' stored views per image (``auto``, the product's default) or 0 (teachers run live)."""
    warmup = max(student_epochs // 3, 0)  # the paper: 10 warm-up epochs of 50
    return {
        "name": "quality",
        "seed": seed,
        "device": "cpu",
        "data": {"source": "digits"},
        "noise": dict(NOISE_SETTINGS[noise]),
        "subsets": {"count": len(TEACHER_ARCHS), "overlap": 0.4},
        "teachers": {"archs": list(TEACHER_ARCHS), "training": _training(teacher_epochs)},
        "student": {"arch": STUDENT_ARCH},
        "distillation": {"alpha": 0.9, "temperature": 4.0, "training": _training(student_epochs),
                         "averaging": {"warmup_epochs": warmup}, "view_pool": view_pool},
        "export": {"onnx": False},
    }


@dataclass(frozen=True)
class Row:
    """A row of the table: its label, the layout (shared teachers) it belongs to and its fields over the base."""

    label: str
    layout: str
    fields: dict = field(default_factory=dict)


ROWS = (
    Row("Baseline I", "none", {"method": {"preset": "baseline_1"}}),
    Row("Baseline II", "single", {"method": {"preset": "baseline_2"}, "teachers": {"archs": [SINGLE_TEACHER]}}),
    Row("Messy collaboration", "single", {"method": {"preset": "baseline_2"}, "teachers": {"archs": [SINGLE_TEACHER]},
                                          "distillation": {"messy": {"rate": 0.5}}}),
    Row("Baseline III", "full", {"method": {"preset": "baseline_3"}}),
    Row("Baseline IV", "full", {"method": {"preset": "baseline_4"}}),
    Row("Baseline V", "overlap", {"method": {"preset": "baseline_5"}}),
    Row("RoS-KD", "overlap", {"method": {"preset": "roskd"}}),
    Row("RoS-KD + CMD", "overlap", {"method": {"preset": "roskd"},
                                    "distillation": {"gate": {"knowledge": "cmd_p", "eta": 2.0, "b2": -4.0}}}),
    Row("GroupDistil", "groups", {"method": {"preset": "roskd"},
                                  "distillation": {"group_dro": {"enabled": True, "eta_w": 0.01}}}),
    Row(GROUP_REFERENCE, "groups", {"method": {"preset": "roskd"}}),
)
LAYOUTS = tuple(dict.fromkeys(row.layout for row in ROWS))


def _merge(base: dict, extra: dict) -> dict:
    """``base`` with ``extra`` merged in recursively (a new dict)."""
    merged = copy.deepcopy(base)
    for key, value in extra.items():
        merged[key] = _merge(merged[key], value) if isinstance(value, dict) and isinstance(merged.get(key), dict) \
            else copy.deepcopy(value)
    return merged


def row_spec(row: Row, noise: str, seed: int, group_data: str | None = None, teacher_epochs: int = 20,
             student_epochs: int = 30, view_pool: int | str = "auto") -> dict:
    """The raw spec of ``row`` for one noise setting and seed (``group_data``: the group-imbalanced ``.npz``)."""
    return with_row(base_spec(noise, seed, teacher_epochs, student_epochs, view_pool), row, group_data)


def with_row(base: dict, row: Row, group_data: str | None = None) -> dict:
    """``base`` with ``row``'s fields merged in, less the fields ``row``'s preset sets (the base must not set them
    too); a ``groups`` row reads ``group_data``, the group-imbalanced digits ``.npz`` (``group_digits.py``).

    Raises:
        ValueError: a ``groups`` row without ``group_data``.
    """
    spec = copy.deepcopy(base)
    if row.layout == "groups":
        if group_data is None:
            raise ValueError(f"row {row.label!r} needs the group-imbalanced digits file")
        spec["data"] = {"source": "npz", "path": group_data}
    for dotted in PRESETS[row.fields.get("method", {}).get("preset", "custom")]:
        *parents, leaf = dotted.split(".")
        node = spec
        for part in parents:
            node = node.get(part, {})
        node.pop(leaf, None)
    return _merge(spec, row.fields)
