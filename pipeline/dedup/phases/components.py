"""Connected components of the duplicate edges in rounds of resumable phases.

No task ever holds the whole edge list. Edges live as *directed* rows ``(u, v)`` in P
partitions by a hash of ``u`` (every undirected edge is stored once from each end), so
one task sees every neighbour of its nodes and about ``2 E / P`` rows. Every unit writes
one partitioned file (:mod:`~pipeline.dedup.phases.partfile`, rows grouped by partition)
and partition ``p``'s task reads its rows from each of them. Phases:

* ``cc_r000`` (one unit per input edge file): normalise, write both directions to the
  partitions of their first node;
* ``cc_r001``, ``cc_r002``, ... (one unit per partition): the large-star (odd rounds) and
  small-star (even rounds) operations of Kiveris et al., "Connected Components in
  MapReduce and Beyond" (SoCC 2014). With ``m(u)`` the smallest of ``u`` and its
  neighbours, large-star links every larger neighbour of ``u`` to ``m(u)``, small-star links
  every smaller neighbour and ``u`` itself to ``m(u)``. Both keep each component connected
  and rewrite it toward a star around its smallest node; each round writes new partitioned
  files and counts, on its input, the *unsettled* nodes: nodes with a smaller neighbour
  and more than one neighbour. A graph with none is a set of stars each centred on its
  component's smallest node, so the first round that counts zero everywhere ends the loop;
* ``components`` (one unit per partition): every centre ``c`` in the partition writes
  ``(ref, cluster = c, size)`` for itself and its leaves, routed to shard groups for the
  ``final`` phase (:func:`pipeline.dedup.phases.shuffle.run_final`).

The root of every component is its smallest ref, as in the in-memory union-find
(:func:`pipeline.dedup.components.components_of_refs`, kept as the tests' reference), so the
survivor of each cluster (the first document in (shard, position) order) is unchanged.

Each unit records its input and output edge counts, its unsettled count and its peak
memory (bytes allocated, by :mod:`tracemalloc`, and the process's ``ru_maxrss``) in its
marker; the driver logs one line per round and writes ``components.json`` in the workdir.
A task holds its partition's rows: about ``2 E / P`` plus the largest degree, which near
the end is the size of the largest component (its star's centre holds every leaf).
"""

from __future__ import annotations

import logging
import resource
import time
import tracemalloc
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from pipeline.dedup.minhash import unique_pairs
from pipeline.dedup.phases.memory import log_phase, partitions_for, task_memory
from pipeline.dedup.phases.partfile import part_rows, read_parts, write_parts
from pipeline.dedup.phases.shuffle import route
from pipeline.dedup.phases.store import (
    done_info,
    mark_done,
    read_table,
    run_phase,
    write_json,
)
from pipeline.dedup.text import U64, mix64
from pipeline.execution import faults
from pipeline.execution.executor import Executor, Resources

log = logging.getLogger("pipeline.dedup")

FINAL_PHASE = "components"
#: a safety net: star rounds on n nodes converge in O(log n) rounds in practice (a 10^6-node
#: chain takes about 2 x log2(n)); more than this means a bug, not a big graph
MAX_ROUNDS = 200

_EMPTY = np.zeros((0, 2), dtype=np.int64)


def round_phase(k: int) -> str:
    """Return the phase name of round ``k`` (``cc_r000`` is the scatter of the input edges)."""
    return f"cc_r{k:03d}"


def node_partition(nodes: np.ndarray, partitions: int) -> np.ndarray:
    """Return the partition of each node (int64 refs), by a well-mixed hash of the ref."""
    return (mix64(np.asarray(nodes, dtype=np.int64).astype(U64)) % U64(partitions)).astype(np.int64)


def edge_path(workdir: str, k: int, src: int) -> Path:
    """Return the partitioned file of directed rows (columns ``u``, ``v``, grouped by the
    partition of ``u``) that unit ``src`` of round ``k`` wrote."""
    return Path(workdir) / round_phase(k) / f"s{src:05d}.parts"


class _Meter:
    """Peak memory and CPU time of one task, for its marker.

    ``peak_bytes`` is what :mod:`tracemalloc` saw allocated at the peak (numpy arrays
    included) above the task's start; ``maxrss_bytes`` the process's peak resident size so
    far (under Ray, the worker process; in-process, the whole driver).
    """

    def __init__(self) -> None:
        self.own = not tracemalloc.is_tracing()
        if self.own:
            tracemalloc.start()
        tracemalloc.reset_peak()
        self.base = tracemalloc.get_traced_memory()[0]
        self.cpu = time.process_time()

    def info(self) -> dict[str, Any]:
        peak = tracemalloc.get_traced_memory()[1] - self.base
        if self.own:
            tracemalloc.stop()
        return {"peak_bytes": int(peak),
                "maxrss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
                "cpu_s": round(time.process_time() - self.cpu, 4)}


def _scatter(workdir: str, k: int, src: int, edges: np.ndarray, partitions: int) -> list[Path]:
    """Write undirected ``edges`` (rows ``a < b``) as directed rows into round ``k``'s partitions.

    Both directions go to the partition of their first node. Rows may repeat: the reader
    sorts and de-duplicates its partition once (sorting here as well costs more than the
    repeats it saves).
    """
    edges = np.asarray(edges, dtype=np.int64).reshape(-1, 2)
    u = np.concatenate([edges[:, 0], edges[:, 1]])
    v = np.concatenate([edges[:, 1], edges[:, 0]])
    path = edge_path(workdir, k, src)
    write_parts(path, node_partition(u, partitions), partitions, {"u": u, "v": v})
    return [path]


def _read_partition(workdir: str, k: int, p: int, n_src: int) -> np.ndarray:
    """Return partition ``p`` of round ``k``'s output: distinct directed rows sorted by (u, v)."""
    parts = [read_parts(edge_path(workdir, k, s), p) for s in range(n_src)]
    parts = [np.stack([c["u"], c["v"]], axis=1) for c in parts if len(c["u"])]
    return unique_pairs(np.concatenate(parts)) if parts else _EMPTY


def _input_task(workdir: str, i: int, path: str, partitions: int) -> None:
    """Round 0, unit ``i``: one input edge file (Parquet, columns ``a``, ``b``) scattered."""
    meter = _Meter()
    cols = read_table(path)
    a = np.asarray(cols["a"], dtype=np.int64)
    b = np.asarray(cols["b"], dtype=np.int64)
    lo, hi = np.minimum(a, b), np.maximum(a, b)
    keep = lo != hi
    edges = np.stack([lo[keep], hi[keep]], axis=1)
    outputs = _scatter(workdir, 0, i, edges, partitions)
    faults.checkpoint(round_phase(0), i)
    mark_done(workdir, round_phase(0), f"i{i:05d}", outputs,
              {"edges_in": int(len(a)), **meter.info()})


def _groups(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For directed rows sorted by (u, v): each row's group index, group starts and sizes."""
    u = rows[:, 0]
    new = np.ones(len(u), dtype=bool)
    new[1:] = u[1:] != u[:-1]
    starts = np.flatnonzero(new)
    group = np.cumsum(new) - 1
    sizes = np.diff(np.append(starts, len(u)))
    return group, starts, sizes


def star_round(rows: np.ndarray, large: bool) -> tuple[np.ndarray, int]:
    """One large-star (``large``) or small-star operation on one partition's directed rows.

    ``rows`` are distinct ``(u, v)`` sorted by (u, v) and hold every neighbour ``v`` of each
    of the partition's nodes ``u``. Returns the undirected edges it emits (``a < b``, may
    repeat) and the number of unsettled nodes of the input (a smaller neighbour and degree
    > 1; zero in every partition means every component is a star around its smallest node).
    """
    if len(rows) == 0:
        return _EMPTY, 0
    u, v = rows[:, 0], rows[:, 1]
    group, starts, sizes = _groups(rows)
    first = v[starts]  # rows are sorted, so the first neighbour is the smallest
    heads = u[starts]
    unsettled = int(((first < heads) & (sizes > 1)).sum())
    m = np.minimum(heads, first)[group]  # m(u) for every row
    if large:
        sel = v > u
        out = np.stack([m[sel], v[sel]], axis=1)
    else:
        sel = (v < u) & (v != m)
        hooked = first < heads
        out = np.concatenate([np.stack([m[sel], v[sel]], axis=1),
                              np.stack([first[hooked], heads[hooked]], axis=1)])
    return out, unsettled


def _round_task(workdir: str, k: int, p: int, n_src: int, partitions: int) -> None:
    """Round ``k`` (>= 1) on partition ``p``: read round ``k - 1``'s rows, apply a star op."""
    meter = _Meter()
    rows = _read_partition(workdir, k - 1, p, n_src)
    out, unsettled = star_round(rows, large=k % 2 == 1)
    outputs = _scatter(workdir, k, p, out, partitions)
    faults.checkpoint(round_phase(k), p)
    mark_done(workdir, round_phase(k), f"p{p:05d}", outputs, {
        "rows_in": int(len(rows)),
        "edges_in": int((rows[:, 0] < rows[:, 1]).sum()),
        "edges_out": int(len(out)),
        "unsettled": unsettled,
        **meter.info(),
    })


def _final_task(workdir: str, k: int, p: int, n_src: int, partitions: int, n_shards: int,
                groups: int) -> None:
    """Label the stars of round ``k``'s (converged) rows held by partition ``p``.

    Writes ``(ref, cluster, size)`` for every centre of the partition and its leaves, routed
    to shard groups.
    """
    meter = _Meter()
    rows = _read_partition(workdir, k, p, n_src)
    if len(rows):
        group, starts, sizes = _groups(rows)
        heads = rows[starts, 0]
        centre = rows[starts, 1] > heads  # no smaller neighbour: the component's smallest node
        leaf_rows = centre[group]
        ref = np.concatenate([heads[centre], rows[leaf_rows, 1]])
        cluster = np.concatenate([heads[centre], rows[leaf_rows, 0]])
        size = np.concatenate([sizes[centre] + 1, (sizes + 1)[group][leaf_rows]])
    else:
        ref = cluster = size = np.zeros(0, dtype=np.int64)
        centre = np.zeros(0, dtype=bool)
    outputs = route(workdir, FINAL_PHASE, p,
                    {"ref": ref, "cluster": cluster, "size": size.astype(np.int64)},
                    n_shards, groups)
    faults.checkpoint(FINAL_PHASE, p)
    mark_done(workdir, FINAL_PHASE, f"p{p:05d}", outputs, {
        "clusters": int(centre.sum()),
        "documents_in_clusters": int(len(ref)),
        "removed": int(len(ref) - centre.sum()),
        **meter.info(),
    })


def components_partitions(inputs: Sequence[str | Path], minimum: int, cap: int,
                          option: str) -> int:
    """Return how many edge partitions the rounds use: at least ``minimum``, and as many as
    keep a partition's share of the directed rows (2 per input edge) within ``cap`` bytes.

    The largest degree still lands in one partition (a component's star centre holds all
    its leaves); the rounds declare what their largest partition actually holds.
    """
    edges = sum(pq.ParquetFile(f).metadata.num_rows for f in inputs)
    return partitions_for(2 * edges, minimum, cap, "components", option)


def _partition_rows(workdir: str, k: int, n_src: int, partitions: int) -> np.ndarray:
    """Return the directed rows each partition of round ``k``'s output holds (before
    de-duplication), from the offsets of the ``n_src`` writing units' files."""
    rows = np.zeros(partitions, dtype=np.int64)
    for src in range(n_src):
        rows += part_rows(edge_path(workdir, k, src))
    return rows


def _n_src(k: int, n_inputs: int, partitions: int) -> int:
    """How many units wrote round ``k``'s files (input files for round 0, else partitions)."""
    return n_inputs if k == 0 else partitions


def run_components(
    workdir: str, inputs: Sequence[str | Path], partitions: int, n_shards: int, groups: int,
    executor: Executor,
) -> dict[str, Any]:
    """Connected components of the edges in ``inputs`` (Parquet files with int64 ``a``, ``b``).

    Runs the rounds described in the module docstring through ``executor`` (finished
    units of an earlier run are reused) and leaves ``(ref, cluster, size)`` of every ref
    that has an edge in the ``components`` phase's routed files: one per partition, rows
    grouped by shard group, for :func:`~pipeline.dedup.phases.shuffle.run_final`. ``cluster`` is the
    smallest ref of the component. Returns the summary (``edges``, ``clusters``,
    ``documents_in_clusters``, ``removed``), and writes it with the per-round figures to
    ``components.json`` in ``workdir``.
    """
    P, n_in = partitions, len(inputs)
    in_units = [f"i{i:05d}" for i in range(n_in)]
    biggest_in = max((pq.ParquetFile(f).metadata.num_rows for f in inputs), default=0)
    declared = task_memory(2 * biggest_in, "components")
    run_phase(workdir, round_phase(0), in_units, _input_task,
              [(workdir, i, str(f), P) for i, f in enumerate(inputs)], executor,
              Resources(memory=declared))
    log_phase(workdir, round_phase(0), n_in, declared, partitions=P)
    first = [done_info(workdir, round_phase(0), f"i{i:05d}") for i in range(n_in)]
    rounds: list[dict[str, Any]] = [{
        "round": 0, "op": "scatter", "edges_in": sum(x["edges_in"] for x in first),
        "max_peak_bytes": max((x["peak_bytes"] for x in first), default=0),
        "max_maxrss_bytes": max((x["maxrss_bytes"] for x in first), default=0),
        "cpu_s": round(sum(x["cpu_s"] for x in first), 3),
    }]
    k = 1
    while True:
        if k > MAX_ROUNDS:
            raise RuntimeError(f"connected components did not converge in {MAX_ROUNDS} rounds "
                               f"(workdir {workdir}); this is a bug")
        units = [f"p{p:05d}" for p in range(P)]
        declared = task_memory(int(_partition_rows(workdir, k - 1, _n_src(k - 1, n_in, P),
                                                   P).max()), "components")
        run_phase(workdir, round_phase(k), units, _round_task,
                  [(workdir, k, p, _n_src(k - 1, n_in, P), P) for p in range(P)], executor,
                  Resources(memory=declared))
        log_phase(workdir, round_phase(k), P, declared, partitions=P)
        infos = [done_info(workdir, round_phase(k), u) for u in units]
        stats = {
            "round": k, "op": "large-star" if k % 2 else "small-star",
            **{key: sum(x[key] for x in infos)
               for key in ("rows_in", "edges_in", "edges_out", "unsettled")},
            "max_rows_in": max(x["rows_in"] for x in infos),
            "max_peak_bytes": max(x["peak_bytes"] for x in infos),
            "max_maxrss_bytes": max(x["maxrss_bytes"] for x in infos),
            "cpu_s": round(sum(x["cpu_s"] for x in infos), 3),
        }
        rounds.append(stats)
        log.info("components round %d (%s): %d edges in, %d emitted, %d unsettled nodes, "
                 "largest task %d rows, peak %.1f MB", k, stats["op"], stats["edges_in"],
                 stats["edges_out"], stats["unsettled"], stats["max_rows_in"],
                 stats["max_peak_bytes"] / 1e6)
        if stats["unsettled"] == 0:
            break
        k += 1
    # round k found its input (round k - 1's output) settled: label those stars
    last = k - 1
    units = [f"p{p:05d}" for p in range(P)]
    declared = task_memory(int(_partition_rows(workdir, last, _n_src(last, n_in, P), P).max()),
                           "components")
    run_phase(workdir, FINAL_PHASE, units, _final_task,
              [(workdir, last, p, _n_src(last, n_in, P), P, n_shards, groups)
               for p in range(P)], executor, Resources(memory=declared))
    log_phase(workdir, FINAL_PHASE, P, declared, partitions=P)
    finals = [done_info(workdir, FINAL_PHASE, u) for u in units]
    summary = {"edges": rounds[1]["edges_in"],
               **{key: sum(x[key] for x in finals)
                  for key in ("clusters", "documents_in_clusters", "removed")}}
    peak = max(max(r["max_peak_bytes"] for r in rounds),
               max(x["peak_bytes"] for x in finals))
    log.info("components: %d edges, %d clusters, %d rounds, largest task peak %.1f MB",
             summary["edges"], summary["clusters"], k, peak / 1e6)
    write_json(Path(workdir) / "components.json", {
        **summary, "partitions": P, "rounds": k, "max_task_peak_bytes": peak,
        "max_task_maxrss_bytes": max(max(r["max_maxrss_bytes"] for r in rounds),
                                     max(x["maxrss_bytes"] for x in finals)),
        "per_round": rounds,
        "final": {"max_peak_bytes": max(x["peak_bytes"] for x in finals),
                  "cpu_s": round(sum(x["cpu_s"] for x in finals), 3)},
    })
    return summary
