"""What a method sees of the training loop: the ``Batch`` of a step, the teachers' ``Knowledge``, the ``Hook`` points.

A method (``compressor.methods``) is a ``Hook`` subclass that overrides the points it needs; every default does
nothing. ``compressor.training.loop`` says when each point runs. Every random draw of a hook comes from
``loop.generator``, so the hook order is the draw order.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any

from torch import Tensor

if TYPE_CHECKING:
    from compressor.training.loop import Loop

# (inputs, row indices, stored view per row or None) -> [K, B, C] logits; see compressor.training.teacher_logits
TeacherSource = Callable[[Tensor, Tensor, "Tensor | None"], Tensor]


@dataclass
class Knowledge:
    """The teachers' supervision of one batch: ``[K, B, C]`` logits and ``[K]`` or ``[K, B]`` weights."""

    logits: Tensor
    weights: Tensor | None = None

    def rows(self, start: int, stop: int) -> Knowledge:
        """The knowledge of the batch rows ``start:stop`` (per-batch weights ``[K]`` are kept whole)."""
        weights = self.weights
        if weights is not None and weights.dim() == 2:
            weights = weights[:, start:stop]
        return Knowledge(self.logits[:, start:stop], weights)


@dataclass
class Batch:
    """One mini-batch as the learners see it; the batch hooks fill in what they change."""

    index: Tensor  # rows of the training split
    x: Tensor  # the (augmented) input, as the teachers see it
    labels: Tensor  # the given (possibly noisy) labels
    groups: Tensor | None = None  # group label per row (GroupDistil)
    view: Tensor | None = None  # the stored view of each row when the views come from a teacher view pool
    inputs: Tensor | None = None  # what the learners see (default: x; soft-randomised when configured)
    targets: Tensor | None = None  # what the supervised term fits (default: labels; messy collaboration)
    knowledge: Knowledge | None = None  # the teachers' logits and weights (distillation)
    extra: dict[str, Tensor] = field(default_factory=dict)  # per-row tensors hooks attach (sliced with the batch)

    def __post_init__(self) -> None:
        self.inputs = self.x if self.inputs is None else self.inputs
        self.targets = self.labels if self.targets is None else self.targets

    def __len__(self) -> int:
        return len(self.index)

    def rows(self, start: int, stop: int) -> Batch:
        """The rows ``start:stop`` of the batch (a rank's slice)."""
        def part(value: Any) -> Any:
            if isinstance(value, dict):
                return {key: tensor[start:stop] for key, tensor in value.items()}
            if isinstance(value, Knowledge):
                return value.rows(start, stop)
            return None if value is None else value[start:stop]

        return Batch(**{f.name: part(getattr(self, f.name)) for f in fields(self)})


class Hook:
    """A method plugged into the training loop; ``index`` is a learner's place in ``loop.learners``."""

    def on_fit_start(self, loop: Loop) -> None:
        """Before the first epoch (after a resumed state was loaded)."""

    def on_step_start(self, loop: Loop) -> None:
        """At the start of every step, before its batch (also of a step a rank has no rows of)."""

    def on_batch(self, loop: Loop, batch: Batch) -> None:
        """Change the whole (global) batch in place before the learners see it."""

    def loss(self, loop: Loop, index: int, batch: Batch, outputs: Sequence[Tensor], rows: Tensor) -> Tensor:
        """Learner ``index``'s per-row loss from the ``rows`` so far (``outputs``: every learner's logits); the place
        to log per-learner figures with ``loop.learners[index].log``."""
        return rows

    def reduce(self, loop: Loop, index: int, batch: Batch, rows: Tensor,
               batch_rows: int) -> tuple[Tensor, float] | None:
        """``(loss to back-propagate, this rank's share of the batch loss)``, or None for the default mean."""
        return None

    def epoch_figures(self, loop: Loop, index: int) -> dict[str, float]:
        """Learner ``index``'s figures of the epoch for the history (its ``sums`` hold the epoch's totals)."""
        return {}

    def on_epoch_end(self, loop: Loop) -> None:
        """After the epoch's figures and schedules, before the epoch checkpoint."""

    def on_fit_end(self, loop: Loop) -> None:
        """After the last epoch (the learners are in evaluation mode)."""

    def state_dict(self) -> Any:
        """State the epoch checkpoint keeps for ``--resume`` (tensors and plain values; None: stateless)."""
        return None

    def load_state_dict(self, state: Any) -> None:
        """Take back a ``state_dict()`` when training resumes."""
