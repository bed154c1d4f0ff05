"""The method registry: every method of the training loop is a named factory ``build(ctx, params)`` of hooks.

For every training loop, ``build_hooks`` calls every built-in factory (it reads its own spec field from ``ctx``
and returns None when the spec leaves it off) and the factory of each extension method the spec lists in
``training.methods`` (``{name, params}``) with those parameters. The hooks run in ``order`` (ties: built-ins, then
extensions in spec order), which is the order of the methods' random draws, so a built-in's order never changes:
messy collaboration 10, soft-randomization 20, the teachers' knowledge and KD term 30, teacher noise 40, teacher
weights 50, mutual distillation 60, GroupDistil 70, parameter averaging 80; extensions default to 100.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from compressor.data.types import Split
from compressor.distributed import DistInfo
from compressor.spec.training import DistillSpec, MethodRef, TrainSpec
from compressor.task import Task
from compressor.training.hooks import Hook, TeacherSource
from compressor.training.learner import Learner


@dataclass
class MethodContext:
    """What a method's factory may read: the loop being built and its spec sections."""

    role: str  # "teacher" or "student"
    train: TrainSpec  # the loop's training section (teachers.training or distillation.training)
    task: Task
    num_classes: int
    data: Split  # the training split
    learners: Sequence[Learner]  # the main one first (the student before its peer)
    device: torch.device | str
    dist: DistInfo  # this process's place when the learners are replicated over ranks
    distill: DistillSpec | None = None  # student loops only
    messy_rate: float = 0.0  # teachers.messy.rate or distillation.messy.rate
    teacher_source: TeacherSource | None = None  # student loops with alpha > 0


Factory = Callable[[MethodContext, dict[str, Any]], "Hook | Sequence[Hook] | None"]


@dataclass(frozen=True)
class Method:
    """A registered method: its factory, its place in the hook order, and whether every loop consults it."""

    build: Factory
    order: int
    builtin: bool


METHODS: dict[str, Method] = {}


def register_method(name: str, *, order: int = 100, builtin: bool = False) -> Callable[[Factory], Factory]:
    """Decorator registering ``build(ctx, params)`` as method ``name`` (see the module docstring).

    Args:
        name: the name a spec lists the method under (``training.methods: [{name: ..., params: {...}}]``).
        order: place of its hooks in the hook order (built-ins: 10-80; default: after them).
        builtin: consulted for every loop with empty ``params`` (it reads its own spec field) instead of only
            when a spec lists it.

    Raises:
        ValueError: the name is already registered.
    """
    def decorate(build: Factory) -> Factory:
        if name in METHODS:
            raise ValueError(f"a method named {name!r} is already registered")
        METHODS[name] = Method(build, order, builtin)
        return build

    return decorate


def unknown_methods(refs: Sequence[MethodRef]) -> list[str]:
    """Names in ``refs`` that no registered extension method has."""
    return [ref.name for ref in refs if ref.name not in METHODS or METHODS[ref.name].builtin]


def build_hooks(ctx: MethodContext) -> list[Hook]:
    """The hooks of every built-in method the spec turns on and of every extension method it lists, in order.

    Raises:
        ValueError: the spec lists a method that is not registered, or a method's settings do not fit the loop.
    """
    unknown = unknown_methods(ctx.train.methods)
    if unknown:
        known = sorted(name for name, m in METHODS.items() if not m.builtin)
        raise ValueError(f"training.methods: unknown method(s) {unknown}; registered: {known or 'none'}")
    calls = [(m, {}) for m in METHODS.values() if m.builtin] + [(METHODS[r.name], r.params) for r in ctx.train.methods]
    hooks: list[Hook] = []
    for method, params in sorted(calls, key=lambda call: call[0].order):
        made = method.build(ctx, dict(params))
        hooks += [] if made is None else [made] if isinstance(made, Hook) else list(made)
    return hooks
