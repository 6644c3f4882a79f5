"""Line-frequency job (CCNet-style line dedup): ``map`` -> ``reduce`` -> ``final``.

``map``: distinct normalised-line hashes of each shard with their counts, written to one
file per map unit, grouped into P partitions by hash. ``reduce`` (task per partition, or per split of a partition too large for
``task_memory_gb``): total count per hash over all shards;
hashes with at least ``min_count`` occurrences are emitted for each shard that has them.
``final``: per shard, the hashes of its lines that are frequent across the corpus.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.core.step import StageShard
from pipeline.dedup.lines import column_line_hashes
from pipeline.dedup.phases.memory import DEFAULT_TASK_MEMORY_GB, cap_bytes, rows_per_task
from pipeline.dedup.phases.partfile import SHUFFLE_FORMAT
from pipeline.dedup.phases.shuffle import (
    SHIFT,
    Columns,
    ReduceUnit,
    log_reduce,
    map_info,
    n_groups,
    plan_reduce,
    read_decisions,
    read_split,
    route,
    run_final,
    run_map,
    shard_index,
    sorted_shards,
)
from pipeline.dedup.phases.store import check_config, done_info, mark_done, run_phase, write_json
from pipeline.dedup.text import U64
from pipeline.execution import faults
from pipeline.execution.executor import Executor, Resources

OPTION = "dedup_lines_v1.task_memory_gb"


@dataclass
class LinesConfig:
    """Options of the line-frequency job."""

    min_count: int = 2
    partitions: int = 16
    max_map_tasks: int = 4096
    task_memory_gb: float = DEFAULT_TASK_MEMORY_GB


def _rows(shard: StageShard, s: int, config: LinesConfig) -> tuple[Columns, list[str], dict]:
    """One shard's distinct normalised-line hashes with their counts.

    Reads only the text column and hashes its lines from the Arrow buffers
    (:func:`column_line_hashes`): no Document, metadata or Python string per row.
    """
    parts: list[np.ndarray] = []
    n = 0
    for batch in shard.text_batches(("text",), batch_size=1024):
        texts = batch.column("text")
        n += len(texts)
        parts.append(column_line_hashes(texts))
    allh = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
    uniq, counts = np.unique(allh, return_counts=True)
    cols = {"hash": uniq, "count": counts.astype(np.int64),
            "shard": np.full(len(uniq), s, dtype=np.int64)}
    return cols, [], {"docs": n, "lines": int(len(allh))}


def _partition(cols: Columns, partitions: int) -> np.ndarray:
    return ((cols["hash"].view(U64) >> U64(SHIFT)) % U64(partitions)).astype(np.int64)


def _reduce(
    workdir: str, r: int, unit: ReduceUnit, n_shards: int, n_units: int, groups: int,
    min_count: int,
) -> None:
    """Total each line hash of reduce unit ``r`` (a map partition, or a split of one by
    hash); route the frequent ones to their shards."""
    p, j, k = unit
    cols = read_split(workdir, p, n_units, "hash", j, k)
    h = cols.get("hash", np.zeros(0, dtype=np.int64)).astype(np.int64, copy=False)
    c = cols.get("count", np.zeros(0, dtype=np.int64)).astype(np.int64, copy=False)
    shard = cols.get("shard", np.zeros(0, dtype=np.int64)).astype(np.int64, copy=False)
    uniq, inverse = np.unique(h, return_inverse=True)
    total = np.bincount(inverse, weights=c, minlength=len(uniq)).astype(np.int64)
    frequent_row = total[inverse] >= min_count
    cols = {"ref": shard[frequent_row] << SHIFT, "hash": h[frequent_row]}
    outputs = route(workdir, "reduce", r, cols, n_shards, groups)
    faults.checkpoint("reduce", r)
    mark_done(workdir, "reduce", f"p{r:05d}", outputs,
              {"frequent_lines": int((total >= min_count).sum()), "distinct_lines": int(len(uniq)),
               "rows": int(len(h))})


def prepare_lines(
    shards: Sequence[StageShard], workdir: str, config: LinesConfig, executor: Executor
) -> dict[str, Any]:
    """Run the line-frequency job over ``shards`` under ``workdir``; return a summary.

    Every phase fans out through ``executor``; finished units of an earlier run are reused.
    """
    ordered = sorted_shards(shards)
    S, P = len(ordered), config.partitions
    cap = cap_bytes(config.task_memory_gb)
    rows_per_task(cap, "lines.reduce", OPTION)  # a cap no split can meet fails before any work
    os.makedirs(workdir, exist_ok=True)
    check_config(workdir, {"job": "lines", "shuffle_format": SHUFFLE_FORMAT,
                           "partitions": P, "min_count": config.min_count,
                           "max_map_tasks": config.max_map_tasks,
                           "task_memory_gb": config.task_memory_gb,
                           "shards": [s.shard_id for s in ordered],
                           "files": [list(s.files) for s in ordered]})
    M = run_map(workdir, ordered, P, config, config.max_map_tasks, _rows, _partition,
                False, executor, cap)
    units, declared = plan_reduce(workdir, M, P, cap, "lines.reduce", OPTION)
    R, groups = len(units), n_groups(S, P)
    run_phase(workdir, "reduce", [f"p{r:05d}" for r in range(R)], _reduce,
              [(workdir, r, unit, S, M, groups, config.min_count)
               for r, unit in enumerate(units)], executor, Resources(memory=declared))
    log_reduce(workdir, "reduce", units, declared, P)
    run_final(workdir, "reduce", R, S, groups, executor)
    red = [done_info(workdir, "reduce", f"p{r:05d}") for r in range(R)]
    summary = {
        "documents": map_info(workdir, M, "docs"),
        "lines": map_info(workdir, M, "lines"),
        "distinct_lines": sum(r["distinct_lines"] for r in red),
        "frequent_lines": sum(r["frequent_lines"] for r in red),
    }
    write_json(Path(workdir) / "summary.json", summary)
    return summary


def load_lines(workdir: str, shard_id: str) -> frozenset[int]:
    """Return the hashes of the shard's lines that are frequent across the corpus."""
    s = shard_index(workdir, shard_id)
    return frozenset(read_decisions(workdir, s)["hash"].tolist())
