"""RoS-KD's baselines I-V and RoS-KD itself as spec presets (``method.preset``).

A preset is a set of spec fields. ``expand_preset`` writes them into the raw spec before validation, so the
resolved spec (written into the run directory) shows every value the preset chose. A field that the spec sets to
another value than the preset's is reported as a conflict instead of being silently overwritten.

| preset     | paper row     | what it fixes                                                                     |
|------------|---------------|-----------------------------------------------------------------------------------|
| baseline_1 | Baseline I    | ``alpha = 0``: the student alone on its supervised target; no teacher is trained  |
| baseline_2 | Baseline II   | one teacher (``teachers.archs[0]``) on the whole training set, Hinton KD           |
| baseline_3 | Baseline III  | every teacher on the whole training set (overlap 1), equal weights                |
| baseline_4 | Baseline IV   | as III with adaptive per-sample weights (stand-in for the paper's RL selector)    |
| baseline_5 | Baseline V    | overlapping subsets + exponential weights, no parameter averaging                 |
| roskd      | RoS-KD        | overlapping subsets + exponential weights + smooth parameter averaging            |

Baselines I-V train without parameter averaging (the paper's Baseline V is "RoS-KD without averaging").
"""

from __future__ import annotations

from typing import Any

from compressor.spec.overrides import copy_tree

PRESETS: dict[str, dict[str, Any]] = {
    "custom": {},
    "baseline_1": {"distillation.alpha": 0.0, "distillation.averaging.enabled": False},
    "baseline_2": {
        "subsets.count": 1, "subsets.overlap": 1.0, "distillation.weighting": "single",
        "distillation.single_teacher": 0, "distillation.averaging.enabled": False,
    },
    "baseline_3": {"subsets.overlap": 1.0, "distillation.weighting": "equal", "distillation.averaging.enabled": False},
    "baseline_4": {
        "subsets.overlap": 1.0, "distillation.weighting": "adaptive", "distillation.averaging.enabled": False,
    },
    "baseline_5": {"distillation.weighting": "exponential", "distillation.averaging.enabled": False},
    "roskd": {"distillation.weighting": "exponential", "distillation.averaging.enabled": True},
}

# Presets built on overlapping subsets need at least two teachers that do not all see the same data.
OVERLAPPING = ("baseline_5", "roskd")
MULTI_TEACHER = ("baseline_3", "baseline_4", "baseline_5", "roskd")


def preset_of(raw: Any) -> str:
    """The preset named by a raw spec mapping (``custom`` when absent or malformed; validation reports the latter)."""
    method = raw.get("method") if isinstance(raw, dict) else None
    preset = method.get("preset", "custom") if isinstance(method, dict) else "custom"
    return preset if isinstance(preset, str) else "custom"


def expand_preset(raw: Any) -> Any:
    """Write the fields of ``raw['method']['preset']`` into the raw spec mapping (a copy; ``raw`` is not changed).

    Raises:
        ValueError: the spec sets a field the preset controls to a different value (all conflicts in one message).
    """
    if not isinstance(raw, dict):
        return raw
    fields = PRESETS.get(preset_of(raw))
    if not fields:
        return raw  # custom, or an unknown name that validation of method.preset reports with a close match
    expanded = copy_tree(raw)
    conflicts = []
    for dotted, value in fields.items():
        *parents, leaf = dotted.split(".")
        node = expanded
        for part in parents:
            if node.get(part) is None:
                node[part] = {}
            node = node[part]
            if not isinstance(node, dict):
                break
        if not isinstance(node, dict):
            continue  # a section that is not a mapping: validation reports it
        if leaf in node and node[leaf] != value:
            conflicts.append(f"{dotted} is {node[leaf]!r} in the spec but the preset sets {value!r}")
        node[leaf] = value
    if conflicts:
        raise ValueError(f"method.preset {preset_of(raw)!r} conflicts with the spec: {'; '.join(conflicts)}. "
                         "Remove those fields or use method.preset: custom")
    return expanded


def preset_problems(preset: str, subset_count: int, overlap: float) -> list[str]:
    """What a validated spec lacks for its preset (e.g. RoS-KD with a single teacher); empty when consistent."""
    problems = []
    if preset in MULTI_TEACHER and subset_count < 2:
        problems.append(f"method.preset {preset!r} distils several teachers but subsets.count is {subset_count}")
    if preset in OVERLAPPING and overlap >= 1.0:
        problems.append(f"method.preset {preset!r} trains teachers on overlapping subsets but subsets.overlap is "
                        f"{overlap} (every teacher sees all data); use an overlap below 1 (the paper: 0.4)")
    return problems
