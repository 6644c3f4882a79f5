"""The Ray executor refuses, on a cluster it started, units that declare more memory than
any node offers (Ray would leave them pending forever)."""

from __future__ import annotations

import os

import pytest

from pipeline.execution.executor import RayExecutor, Resources

pytest.importorskip("ray")
pytestmark = pytest.mark.usefixtures("ray_local")  # the session's private Ray (conftest)


def test_a_declaration_over_every_node_is_refused_on_an_own_cluster(ray_local) -> None:
    executor = RayExecutor()
    assert executor.run(os.getpid, [()], resources=Resources(memory=50 << 20))  # fits: runs
    executor._started = True  # as if this executor had started the session's cluster
    try:
        with pytest.raises(ValueError, match=r"dedup reduce: each unit declares .*task_memory_gb"):
            executor.run(os.getpid, [()], desc="dedup reduce", resources=Resources(memory=1 << 50))
    finally:
        executor._started = False  # the session fixture shuts its cluster down itself
