"""The test split is only ever reported: a guard that lets only the reporting stages read it.

Every decision of a run (the weights a training keeps, early stopping, the final student, the int8 gate, the ONNX
parity check) is taken on the validation split. ``RunContext.bundle()`` hands the stages the test split wrapped in
a ``GuardedSplit``: any use of it (its length, images, labels, groups, methods) while a stage outside
``TEST_READERS`` runs raises ``TestSplitRead``, an internal error that names the stage. The data stage loads and
describes the split (its size and noise rate, its labels saved for the report); metrics, certify and report
measure on it. Outside a pipeline stage (``compressor certify``, ``compressor report`` on a finished run) the
split is readable.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from compressor.data.types import Split

TEST_READERS = frozenset({"data", "metrics", "certify", "report"})


class TestSplitRead(RuntimeError):
    """A stage that may not read the test split did (a bug: the test split would decide something)."""

    __test__ = False  # not a pytest test class, whatever its name


class GuardedSplit:
    """``split`` behind a check of the running stage (``stage()``: its name, or "" outside a stage).

    Attribute reads and writes and ``len`` go through to the split after the check.
    """

    __test__ = False

    def __init__(self, split: Split, stage: Callable[[], str]):
        object.__setattr__(self, "_split", split)
        object.__setattr__(self, "_stage", stage)

    def _check(self, what: str) -> None:
        stage = self._stage()
        if stage and stage not in TEST_READERS:
            readers = ", ".join(sorted(TEST_READERS))
            raise TestSplitRead(f"the {stage} stage read the test split ({what}); only {readers} may: every "
                                "decision is taken on the validation split")

    def __getattr__(self, name: str) -> Any:
        self._check(name)
        return getattr(self._split, name)

    def __setattr__(self, name: str, value: Any) -> None:
        self._check(name)
        setattr(self._split, name, value)

    def __len__(self) -> int:
        self._check("len")
        return len(self._split)
