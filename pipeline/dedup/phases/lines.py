"""Line-frequency job (CCNet-style line dedup): ``map`` -> ``reduce`` -> ``final``.

``map``: distinct normalised-line hashes of each shard with their counts, written to one
file per map unit, grouped into P partitions by hash. ``reduce`` (task per partition, or per split of a partition too large for
``task_memory_gb``): total count per hash over all shards;
hashes with at least ``min_count`` occurrences are emitted for each shard that has them.
``final``: per shard, the hashes of its lines that are frequent across the corpus.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.core.step import StageShard
from pipeline.dedup.lines import column_line_hashes
from pipeline.dedup.phases.memory import DEFAULT_TASK_MEMORY_GB
from pipeline.dedup.phases.shuffle import (
    SHIFT,
    Columns,
    ReduceUnit,
    map_info,
    read_decisions,
    read_split,
    route,
    run_keyed_shuffle,
    shard_index,
)
from pipeline.dedup.phases.store import done_info, mark_done, write_json
from pipeline.dedup.text import U64
from pipeline.execution import faults
from pipeline.execution.executor import Executor

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
    M, R = run_keyed_shuffle(workdir, shards, config,
                             {"job": "lines", "min_count": config.min_count}, "lines.reduce",
                             OPTION, _rows, _partition, False, _reduce, (config.min_count,),
                             executor)
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
