"""Fault injection for tests: make a chosen unit of a chosen phase fail.

Phases call :func:`checkpoint` at the point where a crash is most telling (after a unit
wrote its outputs, before it recorded that it finished). Nothing fails unless a test set a
plan with :func:`inject_failures`; the executor captures the plan when it submits tasks
and activates it in the worker (Ray or in-process), so no function signature carries it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager

FaultPlan = frozenset[tuple[str, int]]

_planned: FaultPlan = frozenset()  # what the driver asked for (read by the executor)
_active: FaultPlan = frozenset()  # what the running task obeys


class InjectedFailure(RuntimeError):
    """Raised at a :func:`checkpoint` that a test asked to fail."""


@contextmanager
def inject_failures(points: Iterable[tuple[str, int]]) -> Iterator[None]:
    """Within the block, tasks submitted through an executor fail at ``(phase, unit)`` points."""
    global _planned
    previous, _planned = _planned, frozenset(points)
    try:
        yield
    finally:
        _planned = previous


def planned() -> FaultPlan:
    """Return the plan a test set (empty outside :func:`inject_failures`)."""
    return _planned


@contextmanager
def activated(plan: FaultPlan) -> Iterator[None]:
    """Make ``plan`` the one :func:`checkpoint` obeys while a task runs (executor use)."""
    global _active
    previous, _active = _active, plan
    try:
        yield
    finally:
        _active = previous


def checkpoint(phase: str, unit: int) -> None:
    """Raise :class:`InjectedFailure` when the active plan names ``(phase, unit)``."""
    if (phase, unit) in _active:
        raise InjectedFailure(f"injected failure in {phase} unit {unit}")
