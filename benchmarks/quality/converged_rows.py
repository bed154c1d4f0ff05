"""The rows of the converged-regime quality benchmark (issue 13): models trained to convergence on noisy digits.

The regime: scikit-learn digits, 40% symmetric label noise, ``small_cnn_wide`` teachers and a ``small_cnn`` student,
60 epochs for every model (SGD lr 0.05, momentum 0.9, weight decay 2e-4, lr / 10 at epochs 30 and 45, batch 64),
no augmentation, tau 4, alpha 0.9, the product's defaults elsewhere (``subsets.layout: random``, ``Exp(1)``
teacher weights normalised to sum to one, averaging from the first epoch, teachers keeping their best validation
epoch: ``select: auto``, the label audit's flagged rows dropped where that does better on validation:
``data.label_issues: auto``). Models memorise the noise here, which is where the papers' methods should pay. Rows
sharing teachers form one *layout* and run one after another in one run directory, so the pipeline's stage keys
train those teachers once per seed. The ``*_last`` layouts keep the teachers' last epoch (``select: last``, the
former default): teachers that have memorised the noisy labels, the regime the issue measured.

| row                                 | layout       | spec on top of the base                                       |
|-------------------------------------|--------------|---------------------------------------------------------------|
| Baseline I                          | none         | ``baseline_1``: the student alone on the noisy labels         |
| Baseline II                         | single       | ``baseline_2``: one teacher on all data, Hinton KD            |
| Messy collaboration                 | single       | Baseline II + MC-S ``distillation.messy.rate: 0.5``           |
| Baseline III                        | full         | ``baseline_3``: 5 teachers on all data, equal weights 1/K     |
| Baseline IV                         | full         | ``baseline_4``: as III with adaptive per-sample weights       |
| Baseline V                          | overlap      | ``baseline_5``: 5 teachers on random subsets (overlap 0.4)    |
| RoS-KD                              | overlap      | ``roskd``: Baseline V + smooth parameter averaging            |
| RoS-KD + CMD                        | overlap      | RoS-KD + the CMD-P entropy gate (``eta 2``, ``b2 -4``)        |
| RoS-KD, raw weights                 | overlap      | RoS-KD with ``weight_scale: raw`` (the paper's draws)         |
| RoS-KD, averaging warm-up 10        | overlap      | RoS-KD with ``averaging.warmup_epochs: 10``                   |
| Baseline III, teachers' last epoch  | full_last    | Baseline III, teachers ``select: last``                       |
| RoS-KD, teachers' last epoch        | overlap_last | RoS-KD, teachers ``select: last``                             |
| RoS-KD, labels as given             | overlap      | RoS-KD with ``data.label_issues: report`` (no audit choice)   |
| RoS-KD, teachers' last epoch,       | overlap_last | RoS-KD, teachers ``select: last``, ``label_issues: report``   |
|   labels as given                   |              |                                                               |
| RoS-KD, shared-core layout          | overlap_core | RoS-KD, ``subsets.layout: shared_core`` (the former default)  |
| GroupDistil                         | groups       | RoS-KD + GroupDistil (``eta_w 0.01``), group-imbalanced data  |
| RoS-KD (group data)                 | groups       | RoS-KD on the same group-imbalanced digits                    |
"""

from __future__ import annotations

from rows import GROUP_REFERENCE, Row, with_row

TEACHER_ARCH = "small_cnn_wide"
STUDENT_ARCH = "small_cnn"
TEACHERS = 5
OVERLAP = 0.4
EPOCHS = 60

ROWS = (
    Row("Baseline I", "none", {"method": {"preset": "baseline_1"}}),
    Row("Baseline II", "single", {"method": {"preset": "baseline_2"}}),
    Row("Messy collaboration", "single", {"method": {"preset": "baseline_2"},
                                          "distillation": {"messy": {"rate": 0.5}}}),
    Row("Baseline III", "full", {"method": {"preset": "baseline_3"}}),
    Row("Baseline V", "overlap", {"method": {"preset": "baseline_5"}}),
    Row("RoS-KD", "overlap", {"method": {"preset": "roskd"}}),
    Row("RoS-KD + CMD", "overlap", {"method": {"preset": "roskd"},
                                    "distillation": {"gate": {"knowledge": "cmd_p", "eta": 2.0, "b2": -4.0}}}),
    Row("RoS-KD, raw weights", "overlap", {"method": {"preset": "roskd"}, "distillation": {"weight_scale": "raw"}}),
    Row("RoS-KD, averaging warm-up 10", "overlap", {"method": {"preset": "roskd"},
                                                    "distillation": {"averaging": {"warmup_epochs": 10}}}),
    Row("Baseline IV", "full", {"method": {"preset": "baseline_4"}}),
    Row("Baseline III, teachers' last epoch", "full_last", {"method": {"preset": "baseline_3"},
                                                             "teachers": {"training": {"select": "last"}}}),
    Row("RoS-KD, teachers' last epoch", "overlap_last", {"method": {"preset": "roskd"},
                                                          "teachers": {"training": {"select": "last"}}}),
    Row("RoS-KD, labels as given", "overlap", {"method": {"preset": "roskd"}, "data": {"label_issues": "report"}}),
    Row("RoS-KD, teachers' last epoch, labels as given", "overlap_last",
        {"method": {"preset": "roskd"}, "teachers": {"training": {"select": "last"}},
         "data": {"label_issues": "report"}}),
    Row("RoS-KD, shared-core layout", "overlap_core", {"method": {"preset": "roskd"},
                                                        "subsets": {"layout": "shared_core"}}),
    Row("GroupDistil", "groups", {"method": {"preset": "roskd"},
                                  "distillation": {"group_dro": {"enabled": True, "eta_w": 0.01}}}),
    Row(GROUP_REFERENCE, "groups", {"method": {"preset": "roskd"}}),
)
# in the order the benchmark runs them over all seeds: the acceptance rows (RoS-KD, Baselines III and I) first, so an
# interrupted run has them for every seed
LAYOUTS = ("overlap", "full", "none", "single", "overlap_last", "full_last", "overlap_core", "groups")


def _training(epochs: int) -> dict:
    """60 epochs of SGD with momentum, lr / 10 at 1/2 and 3/4 of training, no augmentation."""
    return {"epochs": epochs, "batch_size": 64,
            "optimizer": {"name": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 2.0e-4},
            "schedule": {"name": "multistep", "milestones": [epochs // 2, epochs * 3 // 4]}}


def base_spec(seed: int, epochs: int = EPOCHS) -> dict:
    """The raw spec every row starts from (ONNX export off: the benchmark measures accuracy only)."""
    return {
        "name": "converged", "seed": seed, "device": "cpu",
        "data": {"source": "digits"}, "noise": {"kind": "symmetric", "rate": 0.4},
        "subsets": {"count": TEACHERS, "overlap": OVERLAP},
        "teachers": {"archs": [TEACHER_ARCH], "training": _training(epochs)},
        "student": {"arch": STUDENT_ARCH},
        "distillation": {"alpha": 0.9, "temperature": 4.0, "training": _training(epochs)},
        "export": {"onnx": False},
    }


def row_spec(row: Row, seed: int, epochs: int = EPOCHS, group_data: str | None = None) -> dict:
    """The raw spec of ``row`` for one seed (the preset's own fields are left to the preset); ``group_data``: the
    group-imbalanced digits ``.npz`` the ``groups`` rows train on (``group_digits.py``)."""
    return with_row(base_spec(seed, epochs), row, group_data)
