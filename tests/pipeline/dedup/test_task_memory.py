"""Memory-aware dedup phases: declared memory per task, splitting under a per-task cap.

The corpus (``corpus`` fixture, conftest.py) is real Wikipedia text in four stage shards
with planted exact copies, near copies and a boilerplate line. A cap a few rows above the
worker's base forces every shuffle partition to split into several tasks; the kept and
removed documents (and the texts line dedup leaves) must not change.
"""

from __future__ import annotations

import pickle

import pytest

from pipeline.core.step import StepContext, StepStats
from pipeline.dedup.phases.exact import ExactConfig, prepare_exact
from pipeline.dedup.phases.memory import (
    BASE_BYTES,
    BYTES_PER_ROW,
    GB,
    TaskMemoryError,
    rows_per_task,
    splits,
    task_memory,
)
from pipeline.execution.executor import LocalExecutor
from pipeline.steps.dedup_exact import ExactDedup
from pipeline.steps.dedup_lines import LineDedup
from pipeline.steps.dedup_minhash import MinHashDedup


class RecordingExecutor(LocalExecutor):
    """Runs units in this process and records, per call, the memory each unit declared and
    the largest pickled argument tuple (what Ray would ship with the task)."""

    def __init__(self) -> None:
        self.calls: list[dict] = []

    def map(self, fn, args, **kwargs):
        shared = kwargs.get("shared", ())
        self.calls.append({
            "desc": kwargs.get("desc", ""),
            "units": len(args),
            "memory": kwargs["resources"].memory if "resources" in kwargs else None,
            "max_arg_bytes": max((len(pickle.dumps((*shared, *a))) for a in args), default=0),
        })
        return super().map(fn, args, **kwargs)

    def phase(self, name: str) -> list[dict]:
        return [c for c in self.calls if c["desc"] == f"dedup {name}"]


def _run(step, stage, workdir: str) -> tuple[dict[str, str], dict[str, str], RecordingExecutor]:
    """Prepare ``step`` and run it over every shard; return kept {id: text}, removed {id: (reason, value)}."""
    executor = RecordingExecutor()
    step.prepare(stage, workdir, executor)
    kept: dict[str, str] = {}
    removed: dict[str, str] = {}
    for shard in stage:
        step.load(workdir, shard.shard_id)
        ctx = StepContext(StepStats(), lambda d, s, r: removed.__setitem__(d.id, (str(r), getattr(r, "value", None))),
                          shard.shard_id)
        for doc in step.run(list(shard.documents()), ctx):
            kept[doc.id] = doc.text
    return kept, removed, executor


def _cap_gb(rows: int, kind: str) -> float:
    """A cap that leaves room for ``rows`` rows of ``kind`` above the worker's base."""
    return (BASE_BYTES + rows * BYTES_PER_ROW[kind]) / GB


def test_splits_follow_the_rows_and_the_cap() -> None:
    cap = BASE_BYTES + 100 * BYTES_PER_ROW["exact.reduce"]
    assert rows_per_task(cap, "exact.reduce", "x") == 100
    assert splits([0, 100, 101, 1000], cap, "exact.reduce", "x") == [1, 1, 2, 10]
    assert task_memory(100, "exact.reduce") <= cap < task_memory(101, "exact.reduce")


@pytest.mark.parametrize(("make", "phase", "kind", "rows"), [
    (lambda gb: ExactDedup(ExactDedup.Options(partitions=3, task_memory_gb=gb)),
     "reduce", "exact.reduce", 12),
    (lambda gb: LineDedup(LineDedup.Options(partitions=3, min_chars=0, min_words=0,
                                            task_memory_gb=gb)),
     "reduce", "lines.reduce", 300),
    (lambda gb: MinHashDedup(MinHashDedup.Options(partitions=3, threshold=0.8,
                                                  task_memory_gb=gb)),
     "candidates", "minhash.candidates", 300),
], ids=["exact", "lines", "minhash"])
def test_a_tiny_cap_splits_partitions_and_keeps_every_decision(corpus, tmp_path, make, phase,
                                                                kind, rows) -> None:
    stage, _ = corpus
    kept, removed, default = _run(make(4.0), stage, str(tmp_path / "default"))
    cap_gb = _cap_gb(rows, kind)
    kept_t, removed_t, tiny = _run(make(cap_gb), stage, str(tmp_path / "tiny"))
    # the corpus plants duplicates of every kind: documents removed, or lines cut
    assert removed or any(kept.get(d.id, d.text) != d.text
                          for shard in stage for d in shard.documents())
    assert kept_t == kept
    assert removed_t == removed
    (d_call,), (t_call,) = default.phase(phase), tiny.phase(phase)
    assert d_call["units"] == 3  # the configured partitions: nothing to split by default
    assert t_call["units"] >= 6  # every partition split (each holds more than `rows` rows)
    assert t_call["memory"] <= cap_gb * GB < d_call["memory"]
    # every phase declares memory, and no unit ships data through the executor: its
    # arguments are paths, options and shard descriptors
    for call in default.calls + tiny.calls:
        assert call["memory"] and call["memory"] >= BASE_BYTES, call
        assert call["max_arg_bytes"] < 4_096, call


def test_a_cap_below_one_row_names_the_option(corpus, tmp_path) -> None:
    stage, _ = corpus
    too_small = (BASE_BYTES + BYTES_PER_ROW["exact.reduce"] - 1) / GB
    with pytest.raises(TaskMemoryError, match=r"raise dedup_exact_v1\.task_memory_gb"):
        prepare_exact(stage, str(tmp_path / "x"), ExactConfig(task_memory_gb=too_small),
                      LocalExecutor())
    assert not (tmp_path / "x").exists()  # refused before any work
    with pytest.raises(TaskMemoryError, match=r"dedup_minhash_v1\.task_memory_gb"):
        MinHashDedup(MinHashDedup.Options(task_memory_gb=0.01)).prepare(
            stage, str(tmp_path / "y"), LocalExecutor())
    # one row more fits: the job runs, one task per row at most
    fits = (BASE_BYTES + BYTES_PER_ROW["exact.reduce"]) / GB
    summary = prepare_exact(stage, str(tmp_path / "z"), ExactConfig(partitions=1,
                                                                    task_memory_gb=fits),
                            LocalExecutor())
    assert summary["duplicates"] == 20
