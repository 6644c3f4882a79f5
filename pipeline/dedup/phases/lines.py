"""Line-frequency job (CCNet-style line dedup): ``map`` -> ``reduce`` -> ``final``.

``map``: distinct normalised-line hashes of each shard with their counts, split by hash
into P files. ``reduce`` (task per partition): total count per hash over all shards;
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
from pipeline.dedup.lines import line_hashes
from pipeline.dedup.phases.shuffle import (
    SHIFT,
    Columns,
    concat,
    map_info,
    n_groups,
    part_path,
    read_decisions,
    route,
    run_final,
    run_map,
    shard_index,
    sorted_shards,
)
from pipeline.dedup.phases.store import (
    check_config,
    done_info,
    mark_done,
    read_table,
    run_phase,
    write_json,
)
from pipeline.dedup.text import U64
from pipeline.execution import faults
from pipeline.execution.executor import Executor


@dataclass
class LinesConfig:
    """Options of the line-frequency job."""

    min_count: int = 2
    partitions: int = 16
    max_map_tasks: int = 4096


def _rows(shard: StageShard, s: int, config: LinesConfig) -> tuple[Columns, list[str], dict]:
    """One shard's distinct normalised-line hashes with their counts."""
    parts: list[np.ndarray] = []
    n = 0
    for doc in shard.documents():
        n += 1
        parts.append(np.fromiter((h for h in line_hashes(doc.text) if h is not None), dtype=np.int64))
    allh = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
    uniq, counts = np.unique(allh, return_counts=True)
    cols = {"hash": uniq, "count": counts.astype(np.int64),
            "shard": np.full(len(uniq), s, dtype=np.int64)}
    return cols, [], {"docs": n, "lines": int(len(allh))}


def _partition(cols: Columns, partitions: int) -> np.ndarray:
    return ((cols["hash"].view(U64) >> U64(SHIFT)) % U64(partitions)).astype(np.int64)


def _reduce(
    workdir: str, p: int, n_shards: int, n_units: int, partitions: int, min_count: int,
) -> None:
    """Total each line hash of partition ``p``; route the frequent ones to their shards."""
    tables = [read_table(part_path(workdir, "map", p, u)) for u in range(n_units)]
    h = concat(tables, "hash", np.int64)
    c = concat(tables, "count", np.int64)
    shard = concat(tables, "shard", np.int64)
    uniq, inverse = np.unique(h, return_inverse=True)
    total = np.bincount(inverse, weights=c, minlength=len(uniq)).astype(np.int64)
    frequent_row = total[inverse] >= min_count
    groups = n_groups(n_shards, partitions)
    cols = {"ref": shard[frequent_row] << SHIFT, "hash": h[frequent_row]}
    outputs = route(workdir, "reduce", p, cols, n_shards, groups)
    faults.checkpoint("reduce", p)
    mark_done(workdir, "reduce", f"p{p:05d}", outputs,
              {"frequent_lines": int((total >= min_count).sum()), "distinct_lines": int(len(uniq))})


def prepare_lines(
    shards: Sequence[StageShard], workdir: str, config: LinesConfig, executor: Executor
) -> dict[str, Any]:
    """Run the line-frequency job over ``shards`` under ``workdir``; return a summary.

    Every phase fans out through ``executor``; finished units of an earlier run are reused.
    """
    ordered = sorted_shards(shards)
    S, P = len(ordered), config.partitions
    os.makedirs(workdir, exist_ok=True)
    check_config(workdir, {"job": "lines", "partitions": P, "min_count": config.min_count,
                           "max_map_tasks": config.max_map_tasks,
                           "shards": [s.shard_id for s in ordered],
                           "files": [list(s.files) for s in ordered]})
    M = run_map(workdir, ordered, P, config, config.max_map_tasks, _rows, _partition,
                False, executor)
    run_phase(workdir, "reduce", [f"p{p:05d}" for p in range(P)], _reduce,
              [(workdir, p, S, M, P, config.min_count) for p in range(P)], executor)
    run_final(workdir, "reduce", P, S, n_groups(S, P), executor)
    red = [done_info(workdir, "reduce", f"p{p:05d}") for p in range(P)]
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
