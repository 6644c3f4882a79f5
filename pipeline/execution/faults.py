"""Fault injection for tests: make a chosen unit of a chosen phase fail, or hold it.

Phases call :func:`checkpoint` at the point where a crash is most telling (after a unit
wrote its outputs, before it recorded that it finished). Nothing happens unless a test set
a plan: :func:`inject_failures` makes the named units raise there; :func:`hold_once` makes
the first task to reach a named point write a signal file and wait, so that a test can kill
that task's worker or node at a known moment (a retry of the unit passes the point). The
executor captures the plan when it submits tasks and activates it in the worker (Ray or
in-process), so no function signature carries it.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, replace
from pathlib import Path


@dataclass(frozen=True)
class FaultPlan:
    """What tasks do at :func:`checkpoint`: raise at ``fail`` points; at ``hold`` points,
    signal in ``signal_dir`` and wait ``hold_seconds`` (the first arrival only)."""

    fail: frozenset[tuple[str, int]] = frozenset()
    hold: frozenset[tuple[str, int]] = frozenset()
    signal_dir: str = ""
    hold_seconds: float = 0.0


_planned = FaultPlan()  # what the driver asked for (read by the executor)
_active = FaultPlan()  # what the running task obeys


class InjectedFailure(RuntimeError):
    """Raised at a :func:`checkpoint` that a test asked to fail."""


@contextmanager
def _planning(plan: FaultPlan) -> Iterator[None]:
    global _planned
    previous, _planned = _planned, plan
    try:
        yield
    finally:
        _planned = previous


def inject_failures(points: Iterable[tuple[str, int]]) -> AbstractContextManager[None]:
    """Within the block, tasks submitted through an executor fail at ``(phase, unit)`` points."""
    return _planning(replace(_planned, fail=frozenset(points)))


def hold_once(points: Iterable[tuple[str, int]], signal_dir: str | os.PathLike,
              seconds: float = 300.0) -> AbstractContextManager[None]:
    """Within the block, the first task to reach each ``(phase, unit)`` point holds there.

    It writes :func:`signal_path` (JSON: ``pid``, ``host``, ``phase``, ``unit``, ``time``)
    and sleeps ``seconds`` before going on, long enough for a test to kill its process or
    node. Every later arrival (the unit's retry) writes ``<signal>.pass-<pid>`` and goes on.
    """
    return _planning(replace(_planned, hold=frozenset(points), signal_dir=str(signal_dir),
                             hold_seconds=seconds))


def signal_path(signal_dir: str | os.PathLike, phase: str, unit: int) -> Path:
    """Return the file the first task holding at ``(phase, unit)`` writes."""
    return Path(signal_dir) / f"{phase}-{unit}.json"


def planned() -> FaultPlan:
    """Return the plan a test set (empty outside :func:`inject_failures`/:func:`hold_once`)."""
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


def _hold(phase: str, unit: int) -> None:
    path = signal_path(_active.signal_dir, phase, unit)
    record = {"pid": os.getpid(), "host": socket.gethostname(), "phase": phase, "unit": unit,
              "time": time.time()}
    try:
        # exclusive create: exactly one task (the first) holds; the watcher retries a read
        # that finds the file still empty
        with open(path, "x", encoding="utf-8") as f:
            json.dump(record, f)
    except FileExistsError:
        with open(f"{path}.pass-{os.getpid()}", "w", encoding="utf-8") as f:
            json.dump(record, f)
        return
    time.sleep(_active.hold_seconds)


def checkpoint(phase: str, unit: int) -> None:
    """Obey the active plan at ``(phase, unit)``: raise :class:`InjectedFailure` at a fail
    point, hold at a hold point (see :func:`hold_once`); otherwise do nothing."""
    if (phase, unit) in _active.fail:
        raise InjectedFailure(f"injected failure in {phase} unit {unit}")
    if (phase, unit) in _active.hold:
        _hold(phase, unit)
