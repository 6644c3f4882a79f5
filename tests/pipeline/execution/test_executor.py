"""The executor: the one place work fans out, and the only module that imports Ray.

The same behaviour is required of both backends: outcomes in input order, each failing
unit's own exception (not Ray's wrapper) while the other units complete, ``run`` raising
:class:`TaskFailures` that lists every failed unit, ``shared`` values reaching every unit,
and ``faults.inject_failures`` failing exactly the named unit.
"""

from __future__ import annotations

import ast
import sys
import time
from pathlib import Path

import pytest

from pipeline.execution import faults
from pipeline.execution.executor import (
    Executor,
    LocalExecutor,
    RayExecutor,
    TaskFailures,
    make_executor,
)

SCANNED = ("pipeline", "tokenizer", "model")
EXECUTOR = "pipeline/execution/executor.py"


def _imports_ray(source: str) -> list[int]:
    """Return the lines of ``source`` that import ``ray`` (or a ``ray.`` submodule), at any
    depth: module level, inside functions, by ``importlib.import_module`` or ``__import__``."""

    def is_ray(name: str | None) -> bool:
        return name is not None and (name == "ray" or name.startswith("ray."))

    lines = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import) and any(is_ray(a.name) for a in node.names):
            lines.append(node.lineno)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and is_ray(node.module):
            lines.append(node.lineno)
        elif isinstance(node, ast.Call) and node.args:
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            arg = node.args[0]
            if (name in ("import_module", "__import__") and isinstance(arg, ast.Constant)
                    and isinstance(arg.value, str) and is_ray(arg.value)):
                lines.append(node.lineno)
    return sorted(lines)


def test_the_scan_finds_every_form_of_importing_ray() -> None:
    source = (
        "import os\nimport ray\nfrom ray import remote\nfrom ray.util import x\n"
        "def f():\n    import ray.data as d\n    return d\n"
        "import importlib\nimportlib.import_module('ray')\n__import__('ray.util')\n"
        "import rayon\nfrom raylib import y\nfrom . import ray\n"
    )
    assert _imports_ray(source) == [2, 3, 4, 6, 9, 10]


def test_only_the_executor_imports_ray(repo_root: Path) -> None:
    found = {}
    for top in SCANNED:
        for path in sorted((repo_root / top).rglob("*.py")):
            lines = _imports_ray(path.read_text(encoding="utf-8"))
            if lines:
                found[path.relative_to(repo_root).as_posix()] = lines
    assert EXECUTOR in found, "the scan no longer sees the executor's own import of ray"
    others = {p: lines for p, lines in found.items() if p != EXECUTOR}
    assert not others, f"only {EXECUTOR} may import ray; also found in (file: lines) {others}"


# Units. Ray pickles this module by value (see the fixture), so workers need not import it.

def _slow_echo(value: int, delay: float) -> int:
    time.sleep(delay)
    return value


def _divide(a: float, b: float) -> float:
    return a / b


class UnitError(Exception):
    """An exception type of the unit's own, to check it arrives unwrapped."""


def _fail_on(value: int, bad: int) -> int:
    if value == bad:
        raise UnitError(f"unit {value} is bad\nsecond line")
    return value * 10


def _scaled(table: dict[str, int], factor: list[int], key: str) -> int:
    return table[key] * factor[0]


def _at_checkpoint(unit: int) -> int:
    faults.checkpoint("phase", unit)
    return unit


@pytest.fixture(scope="module")
def ray_executor(ray_local) -> RayExecutor:
    """A RayExecutor on the session's local Ray instance."""
    ray_local.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    return RayExecutor()


@pytest.fixture(params=["local", "ray"])
def executor(request: pytest.FixtureRequest) -> Executor:
    """Each test below runs once per backend."""
    if request.param == "local":
        return LocalExecutor()
    return request.getfixturevalue("ray_executor")


def test_outcomes_come_in_input_order(executor: Executor) -> None:
    # the first unit finishes last on Ray (two workers), yet comes first
    args = [(0, 0.8), (1, 0.0), (2, 0.3), (3, 0.0)]
    outcomes = executor.map(_slow_echo, args, names=["a", "b", "c", "d"])
    assert [o.name for o in outcomes] == ["a", "b", "c", "d"]
    assert [o.value for o in outcomes] == [0, 1, 2, 3]
    assert all(o.ok and o.error == "" for o in outcomes)
    assert executor.run(_slow_echo, args) == [0, 1, 2, 3]
    assert executor.map(_slow_echo, []) == [] and executor.run(_slow_echo, []) == []


def test_a_failure_is_the_units_own_exception_and_the_rest_complete(executor: Executor
                                                                    ) -> None:
    outcomes = executor.map(_fail_on, [(1, 2), (2, 2), (3, 2)], names=["u1", "u2", "u3"])
    assert [o.ok for o in outcomes] == [True, False, True]
    assert [o.value for o in outcomes] == [10, None, 30]
    failed = outcomes[1]
    assert type(failed.exception) is UnitError  # not RayTaskError, not a subclass of it
    assert str(failed.exception) == "unit 2 is bad\nsecond line"
    assert failed.error == "UnitError: unit 2 is bad"
    builtin = executor.map(_divide, [(1, 0)])[0]
    assert type(builtin.exception) is ZeroDivisionError
    assert builtin.error == "ZeroDivisionError: division by zero"


def test_run_raises_task_failures_listing_every_failed_unit(executor: Executor) -> None:
    args = [(1, 0), (4, 2), (1, 0), (9, 3)]
    with pytest.raises(TaskFailures) as info:
        executor.run(_divide, args, names=["w", "x", "y", "z"], desc="dividing")
    err = info.value
    assert [o.name for o in err.failures] == ["w", "y"]
    assert str(err) == ("dividing: 2 unit(s) failed: w: ZeroDivisionError: division by zero; "
                        "y: ZeroDivisionError: division by zero")
    assert type(err.__cause__) is ZeroDivisionError
    with pytest.raises(ValueError, match="2 names for 4 units"):
        executor.map(_divide, args, names=["w", "x"])


def test_shared_values_reach_every_unit(executor: Executor) -> None:
    table = {f"k{i}": i for i in range(1000)}
    out = executor.run(_scaled, [("k3",), ("k999",), ("k0",)], shared=(table, [7]))
    assert out == [21, 6993, 0]


def test_injected_failure_fails_exactly_the_named_unit(executor: Executor) -> None:
    args = [(0,), (1,), (2,)]
    with faults.inject_failures([("phase", 1), ("other", 0)]):
        outcomes = executor.map(_at_checkpoint, args)
    assert [o.ok for o in outcomes] == [True, False, True]
    assert type(outcomes[1].exception) is faults.InjectedFailure
    assert outcomes[1].error == "InjectedFailure: injected failure in phase unit 1"
    # outside the block, the plan is gone for the driver and for workers alike
    assert executor.run(_at_checkpoint, args) == [0, 1, 2]


def test_make_executor_names_the_backends() -> None:
    assert isinstance(make_executor("local"), LocalExecutor)
    ray = make_executor("ray", address="10.0.0.1:6379", num_cpus=3, max_retries=1)
    assert isinstance(ray, RayExecutor)
    assert (ray.address, ray.num_cpus, ray.max_retries) == ("10.0.0.1:6379", 3, 1)
    with pytest.raises(ValueError, match="unknown executor 'dask'"):
        make_executor("dask")
