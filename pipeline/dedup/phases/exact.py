"""Exact-duplicate job: ``map`` -> ``reduce`` -> ``final``.

``map``: 128-bit key per document, rows ``(key, ref)`` written to one file per map unit,
grouped into P partitions by key (:mod:`~pipeline.dedup.phases.partfile`). ``reduce`` (task per partition, or per split of a partition too large for
``task_memory_gb``, :func:`~pipeline.dedup.phases.shuffle.plan_reduce`): sort, keep the
smallest ref of each key, emit the others with their keeper, routed to shard groups. ``final`` (task per group): one
decision file per shard.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.core.step import StageShard
from pipeline.dedup.phases.memory import DEFAULT_TASK_MEMORY_GB
from pipeline.dedup.phases.shuffle import (
    POS_MASK,
    SHIFT,
    Columns,
    ReduceUnit,
    ShardDecisions,
    map_info,
    read_decisions,
    read_ids,
    read_split,
    route,
    run_keyed_shuffle,
    shard_index,
)
from pipeline.dedup.phases.store import done_info, mark_done, write_json
from pipeline.dedup.text import U64, document_keys
from pipeline.execution import faults
from pipeline.execution.executor import Executor

OPTION = "dedup_exact_v1.task_memory_gb"


@dataclass
class ExactConfig:
    """Options of the exact-duplicate job."""

    partitions: int = 16
    max_map_tasks: int = 4096
    task_memory_gb: float = DEFAULT_TASK_MEMORY_GB


def _rows(shard: StageShard, s: int, config: ExactConfig) -> tuple[Columns, list[str], dict]:
    """One shard's exact-dedup rows: 128-bit key and ref of every document.

    Keys come from the shard's Arrow text column (:func:`document_keys`: native, no Python
    string or Document per row); only the ids become Python strings, for the ids file.
    """
    ids: list[str] = []
    hi: list[np.ndarray] = [np.zeros(0, dtype=U64)]
    lo: list[np.ndarray] = [np.zeros(0, dtype=U64)]
    for batch in shard.text_batches(("id", "text"), batch_size=1024):  # less peak RSS than 4096, same CPU
        h, lo_ = document_keys(batch.column("text"))
        ids.extend(batch.column("id").to_pylist())
        hi.append(h)
        lo.append(lo_)
    n = len(ids)
    cols = {"hi": np.concatenate(hi), "lo": np.concatenate(lo),
            "ref": (np.int64(s) << SHIFT) | np.arange(n, dtype=np.int64)}
    return cols, ids, {"docs": n}


def _partition(cols: Columns, partitions: int) -> np.ndarray:
    return (cols["hi"] % U64(partitions)).astype(np.int64)


def _reduce(workdir: str, r: int, unit: ReduceUnit, n_shards: int, n_units: int,
            groups: int) -> None:
    """Keep the smallest ref of each key in reduce unit ``r`` (a map partition, or a split of
    one by key); route the other copies."""
    p, j, k = unit
    cols = read_split(workdir, p, n_units, "lo", j, k)
    hi = cols.get("hi", np.zeros(0, dtype=U64)).astype(U64, copy=False)
    lo = cols.get("lo", np.zeros(0, dtype=U64)).astype(U64, copy=False)
    ref = cols.get("ref", np.zeros(0, dtype=np.int64)).astype(np.int64, copy=False)
    order = np.lexsort((ref, lo, hi))
    hi, lo, ref = hi[order], lo[order], ref[order]
    first = np.ones(len(ref), dtype=bool)
    first[1:] = (hi[1:] != hi[:-1]) | (lo[1:] != lo[:-1])
    keeper = ref[np.flatnonzero(first)[np.cumsum(first) - 1]] if len(ref) else ref
    dup = ~first
    outputs = route(workdir, "reduce", r, {"ref": ref[dup], "keeper": keeper[dup]}, n_shards, groups)
    faults.checkpoint("reduce", r)
    mark_done(workdir, "reduce", f"p{r:05d}", outputs,
              {"duplicates": int(dup.sum()), "rows": int(len(ref))})


def prepare_exact(
    shards: Sequence[StageShard], workdir: str, config: ExactConfig, executor: Executor
) -> dict[str, Any]:
    """Run the exact-duplicate job over ``shards`` under ``workdir``; return a summary.

    Every phase fans out through ``executor``; finished units of an earlier run are reused.
    """
    M, R = run_keyed_shuffle(workdir, shards, config, {"job": "exact"}, "exact.reduce", OPTION,
                             _rows, _partition, True, _reduce, (), executor)
    summary = {
        "documents": map_info(workdir, M, "docs"),
        "duplicates": sum(done_info(workdir, "reduce", f"p{r:05d}")["duplicates"] for r in range(R)),
    }
    write_json(Path(workdir) / "summary.json", summary)
    return summary


def load_exact(workdir: str, shard_id: str) -> ShardDecisions:
    """Return, per document id of the shard, the ref of the copy it duplicates (or None)."""
    s = shard_index(workdir, shard_id)
    dec = read_decisions(workdir, s)
    values = {int(r) & POS_MASK: int(k) for r, k in zip(dec["ref"], dec["keeper"], strict=True)}
    return ShardDecisions(read_ids(workdir, s), values, None)
