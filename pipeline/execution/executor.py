"""The one place work fans out: ``Executor.map`` over units, on Ray or in this process.

Every parallel phase of Refinery (shard tasks, dedup phases, DSIR counting and scoring,
tokenization, top-fraction selection) calls :meth:`Executor.map` with a function and one
argument tuple per unit. The policies are the same for all of them:

* **failures** are captured per unit: ``map`` waits for every unit and returns an
  :class:`Outcome` for each, carrying the task's own exception (not Ray's wrapper);
  :meth:`Executor.run` raises :class:`TaskFailures` listing every failed unit;
* **retries** cover lost workers and nodes (``max_retries``); an exception raised by the
  function is deterministic and is not retried;
* **progress** is one tqdm bar per call, with an optional status callback for its postfix;
* **data** moves as files: arguments are small (paths, options). Values passed in
  ``shared`` are sent once per call (a model's weights), not once per unit.

:class:`RayExecutor` is the only code that imports ``ray`` (a test enforces it) and holds
the only ``ray.init``. :class:`LocalExecutor` runs units one after another in this
process, for unit tests and small jobs, with identical results.
"""

from __future__ import annotations

import logging
import os
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from itertools import islice
from typing import Any

from pipeline.execution import faults

log = logging.getLogger("pipeline.executor")

StatusFn = Callable[[], dict[str, Any]]


@dataclass(frozen=True)
class Resources:
    """What one unit needs: CPUs and, when known, memory in bytes (Ray schedules by both)."""

    cpus: float = 1.0
    memory: int | None = None


@dataclass
class Outcome:
    """One unit's result: ``value`` when it succeeded, ``exception`` when it failed."""

    name: str
    value: Any = None
    exception: BaseException | None = None

    @property
    def ok(self) -> bool:
        """True when the unit returned normally."""
        return self.exception is None

    @property
    def error(self) -> str:
        """``"Type: first line of the message"`` of the failure ("" when it succeeded)."""
        if self.exception is None:
            return ""
        first = (str(self.exception).strip().splitlines() or [""])[0]
        return f"{type(self.exception).__name__}: {first}"


class TaskFailures(RuntimeError):
    """Some units of a phase failed; ``failures`` holds each one's outcome."""

    def __init__(self, desc: str, failures: list[Outcome]) -> None:
        self.failures = failures
        listed = "; ".join(f"{o.name}: {o.error}" for o in failures[:5])
        more = f" (and {len(failures) - 5} more)" if len(failures) > 5 else ""
        super().__init__(f"{desc}: {len(failures)} unit(s) failed: {listed}{more}")


def _call(fn: Callable[..., Any], plan: faults.FaultPlan, *args: Any) -> Any:
    """Run one unit (in the worker): activate the fault plan, call ``fn(*args)``.

    Shared values arrive resolved, in front of the unit's own arguments.
    """
    with faults.activated(plan):
        return fn(*args)


class Executor(ABC):
    """Runs a function over units and reports each unit's outcome."""

    @abstractmethod
    def map(
        self,
        fn: Callable[..., Any],
        args: Sequence[tuple],
        *,
        names: Sequence[str] | None = None,
        desc: str = "tasks",
        unit: str = "task",
        resources: Resources = Resources(),
        shared: tuple = (),
        status: StatusFn | None = None,
    ) -> list[Outcome]:
        """Call ``fn(*shared, *args[i])`` for every unit; return the outcomes in input order.

        Returns only after every unit has finished or failed, so no unit is still writing
        when the caller reacts to a failure. ``names`` label units in errors (default: the
        index); ``status`` is polled for the progress bar's postfix.
        """

    def run(self, fn: Callable[..., Any], args: Sequence[tuple], **kwargs: Any) -> list[Any]:
        """Like :meth:`map`, but return the values; raise :class:`TaskFailures` on any failure.

        The first failure's own exception is the raised error's ``__cause__``.
        """
        outcomes = self.map(fn, args, **kwargs)
        failed = [o for o in outcomes if not o.ok]
        if failed:
            raise TaskFailures(kwargs.get("desc", "tasks"), failed) from failed[0].exception
        return [o.value for o in outcomes]

    def shutdown(self) -> None:  # noqa: B027 - only backends with a cluster need it
        """Release what the backend started (a local Ray cluster)."""


def _names(args: Sequence[tuple], names: Sequence[str] | None) -> list[str]:
    if names is None:
        return [str(i) for i in range(len(args))]
    if len(names) != len(args):
        raise ValueError(f"{len(names)} names for {len(args)} units")
    return [str(n) for n in names]


class _Progress:
    """A tqdm bar that shows ``status()`` as its postfix at most every two seconds."""

    def __init__(self, total: int, desc: str, unit: str, status: StatusFn | None) -> None:
        from tqdm import tqdm

        self.bar = tqdm(total=total, desc=desc, unit=unit, dynamic_ncols=True)
        self.status, self.last = status, 0.0

    def tick(self, done: int = 0) -> None:
        if self.status is not None and time.monotonic() - self.last >= 2.0:
            self.last = time.monotonic()
            try:
                self.bar.set_postfix(self.status(), refresh=False)
            except Exception:  # noqa: BLE001 - a status read must never stop the job
                pass
        if done:
            self.bar.update(done)
        self.bar.refresh()

    def close(self) -> None:
        self.bar.close()


class LocalExecutor(Executor):
    """Runs every unit in this process, in order (tests, small jobs, debugging).

    One unit at a time, so a unit's declared ``Resources.memory`` is never shared with
    another running unit.
    """

    def map(self, fn, args, *, names=None, desc="tasks", unit="task",
            resources=Resources(), shared=(), status=None) -> list[Outcome]:
        """See :meth:`Executor.map`; units run one after another in this process."""
        labels = _names(args, names)
        plan = faults.planned()
        outcomes: list[Outcome] = []
        progress = _Progress(len(args), desc, unit, status)
        try:
            for label, a in zip(labels, args, strict=True):
                try:
                    value = _call(fn, plan, *shared, *a)
                    outcomes.append(Outcome(label, value=value))
                except Exception as e:  # noqa: BLE001 - captured per unit, reported by caller
                    log.error("%s %s failed: %r", desc, label, e)
                    outcomes.append(Outcome(label, exception=e))
                progress.tick(1)
        finally:
            progress.close()
        return outcomes


def _task_exception(error: BaseException) -> BaseException:
    """Return the exception the task itself raised, unwrapped from Ray's ``RayTaskError``."""
    cause = getattr(error, "cause", None)
    return cause if isinstance(cause, BaseException) else error


@dataclass
class RayExecutor(Executor):
    """Runs units as Ray tasks; joins ``address`` (or ``RAY_ADDRESS``), else starts a private cluster.

    ``max_retries`` re-runs a unit whose worker or node died; ``num_cpus`` sizes a local
    cluster. Ray starts on the first :meth:`map`, so building an executor is free.
    ``max_pending`` units are submitted at a time, the rest as each finishes: a submitted
    Ray task costs the driver about 12 KB until it ends (10,000 at once: 275 MB).
    """

    address: str | None = None
    num_cpus: int | None = None
    max_retries: int = 3
    max_pending: int = 4096
    log_to_driver: bool = True
    _started: bool = field(default=False, init=False, repr=False)

    def _ensure_ray(self) -> Any:
        import ray

        if ray.is_initialized():
            return ray
        address = self.address or os.environ.get("RAY_ADDRESS") or None
        if address:
            ray.init(address=address, log_to_driver=self.log_to_driver)
        else:
            # "local" always starts a private cluster; a bare ray.init() would attach to any
            # cluster that `ray start` left running on this machine, maybe someone else's.
            ray.init(address="local", num_cpus=self.num_cpus, include_dashboard=False,
                     log_to_driver=self.log_to_driver)
            self._started = True
        return ray

    def map(self, fn, args, *, names=None, desc="tasks", unit="task",
            resources=Resources(), shared=(), status=None) -> list[Outcome]:
        """See :meth:`Executor.map`; units run as Ray tasks, shared values put once."""
        labels = _names(args, names)
        if not args:
            return []
        ray = self._ensure_ray()
        opts: dict[str, Any] = {"num_cpus": resources.cpus, "max_retries": self.max_retries,
                                "retry_exceptions": False}
        if resources.memory:
            opts["memory"] = int(resources.memory)
            self._check_memory(ray, int(resources.memory), desc)
        remote = ray.remote(_call)
        shared_refs = [ray.put(v) for v in shared]
        plan = faults.planned()
        waiting = iter(enumerate(args))
        pending: dict[Any, int] = {}

        def submit() -> None:
            for i, a in islice(waiting, max(0, max(1, self.max_pending) - len(pending))):
                # named after the unit, so Ray's own retry and error messages say which one
                task = remote.options(**opts, name=labels[i])
                pending[task.remote(fn, plan, *shared_refs, *a)] = i

        outcomes: list[Outcome | None] = [None] * len(args)
        progress = _Progress(len(args), desc, unit, status)
        try:
            submit()
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=len(pending), timeout=2.0)
                for ref in ready:
                    i = pending.pop(ref)
                    try:
                        outcomes[i] = Outcome(labels[i], value=ray.get(ref))
                    except Exception as e:  # noqa: BLE001 - captured per unit
                        cause = _task_exception(e)
                        log.error("%s %s failed: %s", desc, labels[i], Outcome("", exception=cause).error)
                        outcomes[i] = Outcome(labels[i], exception=cause)
                submit()
                progress.tick(len(ready))
        except BaseException:
            # Interrupted (Ctrl-C, driver killed): stop the workers so none keeps writing.
            for ref in pending:
                ray.cancel(ref, force=True)
            raise
        finally:
            progress.close()
        return [o for o in outcomes if o is not None]

    def _check_memory(self, ray: Any, memory: int, desc: str) -> None:
        """Refuse (own local cluster) or warn about (joined cluster, which may grow) units that
        declare more memory than any node offers: Ray would leave them pending forever."""
        offered = max((n.get("Resources", {}).get("memory", 0) for n in ray.nodes()
                       if n.get("Alive")), default=0)
        if memory <= offered:
            return
        msg = (f"{desc}: each unit declares {memory / 2**30:.2f} GiB of memory but the largest "
               f"node offers {offered / 2**30:.2f} GiB to Ray; lower the step's task memory "
               "cap (task_memory_gb) or run on nodes with more memory")
        if self._started:
            raise ValueError(msg)
        log.warning("%s (waiting for a node that has it)", msg)

    def shutdown(self) -> None:
        """Stop the local cluster this executor started (a joined cluster is left running)."""
        if self._started:
            import ray

            ray.shutdown()
            self._started = False


def make_executor(kind: str = "ray", address: str | None = None, num_cpus: int | None = None,
                  max_retries: int = 3) -> Executor:
    """Return the backend ``kind`` names: ``"ray"`` (default) or ``"local"`` (in-process)."""
    if kind == "local":
        return LocalExecutor()
    if kind == "ray":
        return RayExecutor(address=address, num_cpus=num_cpus, max_retries=max_retries)
    raise ValueError(f"unknown executor {kind!r}; use 'ray' or 'local'")
