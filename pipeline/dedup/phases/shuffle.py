"""The shuffle every dedup job shares: map units, partitions, shard groups, decision files.

Documents are addressed by ``ref = shard_index << 32 | position``: ``shard_index`` is
the shard's rank among the job's shards sorted by id, ``position`` its place in the
shard's stage order. Smaller ref = earlier in the deterministic (shard, position) order,
which decides which copy of a duplicate survives.

A ``map`` unit reads a contiguous run of shards (at most ``max_map_tasks`` units), turns
each shard into rows with a job's row function and writes them to ONE partitioned file
(:mod:`~pipeline.dedup.phases.partfile`: rows grouped by their partition, with an offsets
index), of which reduce unit ``p`` reads only partition ``p``'s rows. Reducers route their
per-document results to shard groups (contiguous ranges of shard indexes, at most
:data:`MAX_GROUPS`) the same way: one file per reducer, grouped by shard group; the
``final`` phase reads its group's rows from each of them and writes one decision file per
shard, which :class:`ShardDecisions` serves to the shard's task. The shuffle thus has one
file per writing unit, not one per (unit, partition): a reader costs its rows plus about
50-90 us per file it reads from.
"""

from __future__ import annotations

import logging
import os
from bisect import bisect_left
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.core.step import StageShard
from pipeline.dedup.phases.memory import (
    cap_bytes,
    log_phase,
    rows_per_task,
    splits,
    task_memory,
)
from pipeline.dedup.phases.partfile import (
    SHUFFLE_FORMAT,
    iter_parts,
    part_bytes,
    read_parts,
    write_parts,
)
from pipeline.dedup.phases.store import (
    check_config,
    done_info,
    is_done,
    load_config,
    mark_done,
    read_table,
    run_phase,
    write_table,
)
from pipeline.dedup.text import U64, mix64
from pipeline.execution import faults
from pipeline.execution.executor import Executor, Resources

log = logging.getLogger("pipeline.dedup")

SHIFT = 32
POS_MASK = (1 << SHIFT) - 1
MAX_GROUPS = 256
#: rows a reducer reads at a time from one map file when it keeps only a split of them
READ_BATCH_ROWS = 1 << 16

Columns = dict[str, np.ndarray]
#: ``rows(shard, shard_index, config) -> (columns, document ids, counters)``
RowsFn = Callable[[StageShard, int, Any], tuple[Columns, list[str], dict[str, int]]]
#: ``partition(columns, partitions) -> partition of each row``
PartitionFn = Callable[[Columns, int], np.ndarray]


# --------------------------------------------------------------------------- layout


def sorted_shards(shards: Sequence[StageShard]) -> list[StageShard]:
    """Return the shards in the job's deterministic order (by id); ids must be unique."""
    ordered = sorted(shards, key=lambda s: s.shard_id)
    ids = [s.shard_id for s in ordered]
    if len(set(ids)) != len(ids):
        raise ValueError("shard ids are not unique")
    if len(ordered) >= 1 << 31:
        raise ValueError("too many shards for 32-bit shard indexes")
    return ordered


def n_groups(n_shards: int, partitions: int) -> int:
    """Number of shard groups the reducers route decisions into (at most 256)."""
    return max(1, min(n_shards, partitions, MAX_GROUPS))


def group_of(shard_index: np.ndarray | int, n_shards: int, groups: int) -> np.ndarray | int:
    """Return the group of a shard index (contiguous ranges of shards)."""
    return (np.asarray(shard_index, dtype=np.int64) * groups) // max(n_shards, 1)


def shards_in_group(g: int, n_shards: int, groups: int) -> list[int]:
    """Return the shard indexes of group ``g``."""
    return [s for s in range(n_shards) if (s * groups) // n_shards == g]


def group_shards(ordered: Sequence[StageShard], g: int, n_shards: int,
                 groups: int) -> dict[int, StageShard]:
    """Return group ``g``'s shards by index: what a unit of a per-group phase is given,
    rather than the job's whole shard list (which grows with the job)."""
    return {s: ordered[s] for s in shards_in_group(g, n_shards, groups)}


def map_path(workdir: str, phase: str, u: int) -> Path:
    """Return the partitioned file (rows grouped by partition) map unit ``u`` of ``phase``
    wrote."""
    return Path(workdir) / phase / f"m{u:05d}.parts"


def routed_path(workdir: str, phase: str, p: int) -> Path:
    """Return the partitioned file (rows grouped by shard group) unit ``p`` of ``phase``
    routed."""
    return Path(workdir) / phase / f"p{p:05d}.parts"


def read_routed(workdir: str, phase: str, p: int, g: int) -> Columns:
    """Return the rows unit ``p`` of ``phase`` routed to shard group ``g``."""
    return read_parts(routed_path(workdir, phase, p), g)


def ids_path(workdir: str, s: int) -> Path:
    """Return the file holding the document ids of shard index ``s`` in stage order."""
    return Path(workdir) / "ids" / f"s{s:06d}.parquet"


def decision_path(workdir: str, s: int) -> Path:
    """Return the decision file of shard index ``s``."""
    return Path(workdir) / "decisions" / f"s{s:06d}.parquet"


def concat(tables: list[Columns], name: str, dtype: Any) -> np.ndarray:
    """Concatenate column ``name`` of ``tables`` as ``dtype`` (empty when all are empty)."""
    parts = [t[name] for t in tables if len(t[name])]
    return np.concatenate(parts).astype(dtype, copy=False) if parts else np.zeros(0, dtype=dtype)


def route(workdir: str, phase: str, p: int, columns: Columns, n_shards: int,
          groups: int) -> list[Path]:
    """Write rows grouped by the shard group of ``columns['ref']``'s shard to unit ``p``'s
    routed file (:func:`routed_path`); return ``[that path]`` (the unit's outputs)."""
    path = routed_path(workdir, phase, p)
    write_parts(path, group_of(columns["ref"] >> SHIFT, n_shards, groups), groups, columns)
    return [path]


# --------------------------------------------------------------------------- map


def map_units(n_shards: int, max_map_tasks: int) -> list[tuple[int, int]]:
    """Split shard indexes ``0..n_shards-1`` into at most ``max_map_tasks`` contiguous runs.

    A map task reads every shard of its run and writes one partitioned file.
    """
    m = max(1, min(n_shards, max_map_tasks))
    return [((u * n_shards) // m, ((u + 1) * n_shards) // m) for u in range(m)]


def _map_task(
    rows_fn: RowsFn, part_fn: PartitionFn, with_ids: bool, shards: Sequence[StageShard],
    lo: int, u: int, workdir: str, partitions: int, config: Any,
) -> None:
    """Map one run of shards (indexes ``lo..``): rows of each shard, split into partitions."""
    tables: list[Columns] = []
    info: dict[str, int] = defaultdict(int)
    outputs: list[Path] = []
    for k, shard in enumerate(shards):
        cols, ids, shard_info = rows_fn(shard, lo + k, config)
        tables.append(cols)
        if with_ids:
            path = ids_path(workdir, lo + k)
            write_table(path, {"id": np.array(ids, dtype=object)})
            outputs.append(path)
        for key, v in shard_info.items():
            info[key] += v
    names = list(tables[0]) if tables else []
    cols = {n: concat(tables, n, tables[0][n].dtype) for n in names}
    part = part_fn(cols, partitions) if names else np.zeros(0, dtype=np.int64)
    path = map_path(workdir, "map", u)
    # rows written per partition: the reducers' plan (how many tasks, how much memory)
    info["bucket_rows"] = write_parts(path, part, partitions, cols).tolist()
    outputs.append(path)
    faults.checkpoint("map", u)
    mark_done(workdir, "map", f"m{u:05d}", outputs, dict(info))


def run_map(
    workdir: str, ordered: Sequence[StageShard], partitions: int, config: Any,
    max_map_tasks: int, rows_fn: RowsFn, part_fn: PartitionFn, with_ids: bool,
    executor: Executor, cap: int,
) -> int:
    """Run the ``map`` phase: ``rows_fn`` on every shard, rows split by ``part_fn``.

    ``with_ids`` also writes each shard's document ids (for :class:`ShardDecisions`).
    ``cap`` (bytes) bounds a map task's memory, estimated from its shards' Parquet bytes:
    runs of shards that would exceed it are cut into more units (one shard per unit at
    most). Returns the number of map units.
    """
    units, declared = plan_map(ordered, max_map_tasks, cap)
    run_phase(workdir, "map", [f"m{u:05d}" for u in range(len(units))], _map_task,
              [(rows_fn, part_fn, with_ids, list(ordered[lo:hi]), lo, u, workdir, partitions,
                config) for u, (lo, hi) in enumerate(units)], executor,
              Resources(memory=declared))
    log_phase(workdir, "map", len(units), declared, shards=len(ordered))
    return len(units)


def plan_map(ordered: Sequence[StageShard], max_map_tasks: int, cap: int,
             ) -> tuple[list[tuple[int, int]], int]:
    """Return the map units (runs of shard indexes) and the memory each declares.

    Starts from :func:`map_units` and doubles the number of units while the largest run's
    estimate (``BASE + Parquet bytes x map.input_byte``) exceeds ``cap``; a single shard
    over the cap cannot be cut here (the stage wrote it) and is declared as it is.
    """
    n = max(1, min(len(ordered), max_map_tasks))
    sizes = shard_bytes(ordered)
    while True:
        units = map_units(len(ordered), n)
        declared = map_memory(sizes, units)
        if declared <= cap or n >= len(ordered):
            break
        n = min(len(ordered), 2 * n)
    if declared > cap:
        log.warning("dedup map: a shard needs about %.0f MB, over the task memory cap of "
                    "%.0f MB; it runs as one task", declared / 1e6, cap / 1e6)
    return units, declared


def shard_bytes(ordered: Sequence[StageShard]) -> np.ndarray:
    """Return each shard's Parquet bytes on disk, in ``ordered``'s order."""
    return np.array([sum(os.path.getsize(f) for f in s.files) for s in ordered], dtype=np.int64)


def map_memory(sizes: np.ndarray, units: Sequence[tuple[int, int]]) -> int:
    """Return the memory the largest of ``units`` (runs of shard indexes) declares, from
    its shards' Parquet bytes (:func:`shard_bytes`)."""
    bounds = np.concatenate([[0], np.cumsum(sizes)])
    biggest = max((int(bounds[hi] - bounds[lo]) for lo, hi in units), default=0)
    return task_memory(biggest, "map.input_byte")


def bucket_rows(workdir: str, n_units: int, partitions: int) -> np.ndarray:
    """Return the rows the ``map`` units wrote to each partition (from their markers)."""
    rows = np.zeros(partitions, dtype=np.int64)
    for u in range(n_units):
        rows += np.asarray(done_info(workdir, "map", f"m{u:05d}")["bucket_rows"], dtype=np.int64)
    return rows


#: a reduce unit: (map partition, which split of it, into how many splits)
ReduceUnit = tuple[int, int, int]


def plan_reduce(workdir: str, n_units: int, partitions: int, cap: int, kind: str,
                option: str) -> tuple[list[ReduceUnit], int]:
    """Return the reduce units of a shuffle and the memory each declares.

    A map partition whose rows would need more than ``cap`` bytes in one task (``kind``'s
    bytes per row, :mod:`~pipeline.dedup.phases.memory`) is split by a hash of its key
    into as many units as keep each within it; units are numbered in (partition, split)
    order, so without splits unit ``p`` is partition ``p``. Raises
    :class:`~pipeline.dedup.phases.memory.TaskMemoryError` (naming ``option``) when not even
    one row fits.
    """
    rows = bucket_rows(workdir, n_units, partitions)
    ks = splits(rows.tolist(), cap, kind, option)
    units = [(p, j, k) for p, k in enumerate(ks) for j in range(k)]
    biggest = max((-(-int(r) // k) for r, k in zip(rows, ks, strict=True)), default=0)
    return units, task_memory(biggest, kind)


def read_split(workdir: str, p: int, n_units: int, key: str, j: int, k: int) -> Columns:
    """Return the rows of map partition ``p`` (from every map unit's file) in split ``j`` of
    ``k``, in (map unit, row) order.

    A row is in split ``mix64(row[key]) % k``; with ``k == 1`` every row is. Files are read
    in batches of :data:`READ_BATCH_ROWS` when split, so a task never holds more than its
    split and one batch.
    """
    tables: list[Columns] = []
    for u in range(n_units):
        path = map_path(workdir, "map", u)
        if k == 1:
            tables.append(read_parts(path, p))
            continue
        for cols in iter_parts(path, p, p + 1, READ_BATCH_ROWS):
            sel = (mix64(cols[key].view(U64)) % U64(k)) == U64(j)
            tables.append({n: v[sel] for n, v in cols.items()})
    if not tables:
        return {}
    return {n: concat(tables, n, tables[0][n].dtype) for n in tables[0]}


def log_reduce(workdir: str, phase: str, units: Sequence[ReduceUnit], declared: int,
               partitions: int) -> None:
    """Log and record a reduce phase's plan (see :func:`~pipeline.dedup.phases.memory.log_phase`)."""
    log_phase(workdir, phase, len(units), declared, map_partitions=partitions,
              split_partitions=sum(1 for _, j, k in units if j == 0 and k > 1))


def map_info(workdir: str, n_units: int, key: str) -> int:
    """Return the sum of counter ``key`` over the map units."""
    return sum(done_info(workdir, "map", f"m{u:05d}").get(key, 0) for u in range(n_units))


# --------------------------------------------------------------------------- final


def _finalize_group(
    workdir: str, phase_in: str, g: int, partitions: int, n_shards: int, groups: int,
) -> None:
    """Gather a group's routed rows from every partition into one decision file per shard."""
    tables = [read_routed(workdir, phase_in, p, g) for p in range(partitions)]
    names = list(tables[0]) if tables else ["ref"]
    cols = {n: concat(tables, n, tables[0][n].dtype) for n in names}
    # a total order (ref, then the other columns), so a decision file's bytes do not depend
    # on how the reducers split the rows (lines: one row per frequent hash of a shard)
    order = np.lexsort([cols[n] for n in reversed(names) if n != "ref"] + [cols["ref"]])
    cols = {k: v[order] for k, v in cols.items()}
    shard = cols["ref"] >> SHIFT
    outputs = []
    for s in shards_in_group(g, n_shards, groups):
        lo, hi = np.searchsorted(shard, [s, s + 1])
        path = decision_path(workdir, s)
        write_table(path, {k: v[lo:hi] for k, v in cols.items()})
        outputs.append(path)
    faults.checkpoint("final", g)
    mark_done(workdir, "final", f"g{g:05d}", outputs)


def run_keyed_shuffle(
    workdir: str, shards: Sequence[StageShard], config: Any, job: dict[str, Any],
    kind: str, option: str, rows_fn: RowsFn, part_fn: PartitionFn, with_ids: bool,
    reduce_fn: Callable[..., None], reduce_extra: tuple[Any, ...], executor: Executor,
) -> tuple[int, int]:
    """Run a map / reduce / final job whose reduce needs one partition at a time (exact
    keys, line hashes); return ``(map units, reduce units)``.

    ``config`` has ``partitions``, ``max_map_tasks`` and ``task_memory_gb``; ``job`` is the
    rest of what a rerun must match (``check_config``), beside the shuffle format, those
    three and the shards. ``kind`` names the reduce's memory estimate (``exact.reduce``),
    ``option`` the YAML option a too-small cap is reported under. The reduce is
    ``reduce_fn(workdir, r, unit, n_shards, n_map_units, groups, *reduce_extra)`` per unit.
    Every phase fans out through ``executor``; finished units of an earlier run are reused.
    """
    ordered = sorted_shards(shards)
    S, P = len(ordered), config.partitions
    cap = cap_bytes(config.task_memory_gb)
    rows_per_task(cap, kind, option)  # a cap no split can meet fails before any work
    os.makedirs(workdir, exist_ok=True)
    check_config(workdir, {**job, "shuffle_format": SHUFFLE_FORMAT, "partitions": P,
                           "max_map_tasks": config.max_map_tasks,
                           "task_memory_gb": config.task_memory_gb,
                           "shards": [s.shard_id for s in ordered],
                           "files": [list(s.files) for s in ordered]})
    M = run_map(workdir, ordered, P, config, config.max_map_tasks, rows_fn, part_fn,
                with_ids, executor, cap)
    units, declared = plan_reduce(workdir, M, P, cap, kind, option)
    R, groups = len(units), n_groups(S, P)
    run_phase(workdir, "reduce", [f"p{r:05d}" for r in range(R)], reduce_fn,
              [(workdir, r, unit, S, M, groups, *reduce_extra) for r, unit in enumerate(units)],
              executor, Resources(memory=declared))
    log_reduce(workdir, "reduce", units, declared, P)
    run_final(workdir, "reduce", R, S, groups, executor)
    return M, R


def run_final(workdir: str, phase_in: str, partitions: int, n_shards: int, groups: int,
              executor: Executor) -> None:
    """Run the ``final`` phase: one decision file per shard from ``phase_in``'s routed rows.

    ``partitions`` is how many partitions of ``phase_in`` routed rows to each of the
    ``groups`` shard groups.
    """
    units = [f"g{g:05d}" for g in range(groups)]
    args = [(workdir, phase_in, g, partitions, n_shards, groups) for g in range(groups)]
    routed = routed_bytes(workdir, phase_in, partitions, groups)
    declared = task_memory(int(routed.max(initial=0)), "final.routed_byte")
    run_phase(workdir, "final", units, _finalize_group, args, executor, Resources(memory=declared))
    log_phase(workdir, "final", groups, declared, routed_bytes=int(routed.sum()))


def routed_bytes(workdir: str, phase: str, partitions: int, groups: int) -> np.ndarray:
    """Return the bytes of the rows each shard group was routed by the ``partitions`` units
    of ``phase`` (rows x row width, from the routed files' offsets)."""
    out = np.zeros(groups, dtype=np.int64)
    for p in range(partitions):
        out += part_bytes(routed_path(workdir, phase, p))
    return out


def is_prepared(workdir: str) -> bool:
    """True when every final unit of the job in ``workdir`` is done."""
    cfg = load_config(workdir)
    groups = n_groups(len(cfg["shards"]), cfg["partitions"])
    return all(is_done(workdir, "final", f"g{g:05d}") for g in range(groups))


# --------------------------------------------------------------------------- decisions


def shard_index(workdir: str, shard_id: str) -> int:
    """Return the index of ``shard_id`` in the prepared job (KeyError if it was not part)."""
    config = load_config(workdir)
    try:
        return config["shards"].index(shard_id)
    except ValueError:
        raise KeyError(f"shard {shard_id!r} was not part of the prepared job in {workdir}") from None


def read_ids(workdir: str, s: int) -> list[str]:
    """Return the document ids of shard index ``s`` in stage order."""
    return [str(x) for x in read_table(ids_path(workdir, s))["id"]]


def read_decisions(workdir: str, s: int) -> Columns:
    """Return the columns of shard index ``s``'s decision file."""
    return read_table(decision_path(workdir, s))


class ShardDecisions:
    """Per-document decisions for one shard, looked up by document id.

    Documents are matched by id; if a shard repeats an id, its occurrences are matched by
    position: the k-th lookup of the id since :meth:`seek` ``(p)`` gets the decision of the
    id's k-th occurrence at or after position ``p`` of the shard's stage order. The runner
    seeks to where it resumes a shard and to the start of a chunk it redoes, so a killed and
    resumed (or redone) shard gets the decisions an uninterrupted run gets.
    """

    def __init__(self, ids: Sequence[str], values: dict[int, Any], default: Any = None) -> None:
        self._by_id: dict[str, Any] = {}
        self._repeats: dict[str, list[Any]] = {}
        self._positions: dict[str, list[int]] = {}  # of a repeated id's occurrences, ascending
        first: dict[str, int] = {}
        for pos, doc_id in enumerate(ids):
            v = values.get(pos, default)
            if callable(v):
                v = v(pos)
            if doc_id in self._by_id:
                if doc_id not in self._repeats:
                    self._repeats[doc_id] = [self._by_id[doc_id]]
                    self._positions[doc_id] = [first[doc_id]]
                self._repeats[doc_id].append(v)
                self._positions[doc_id].append(pos)
            else:
                self._by_id[doc_id] = v
                first[doc_id] = pos
        self._cursor = 0
        self._seen: dict[str, int] = {}  # next occurrence of each repeated id looked up

    def seek(self, position: int) -> None:
        """Match the next lookups from document ``position`` of the stage order on."""
        self._cursor = position
        self._seen.clear()

    def get(self, doc_id: str) -> Any:
        """Return the decision for ``doc_id``; KeyError if the shard had no such document."""
        if doc_id in self._repeats:
            k = self._seen.get(doc_id)
            if k is None:
                k = bisect_left(self._positions[doc_id], self._cursor)
            self._seen[doc_id] = k + 1
            reps = self._repeats[doc_id]
            return reps[min(k, len(reps) - 1)]
        return self._by_id[doc_id]
