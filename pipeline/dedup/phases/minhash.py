"""MinHash-LSH job: map -> candidates -> [verify1 -> verify2] -> components -> final ->
survivor similarity.

``map``: signatures of each shard's Arrow text column (the C kernel reads the UTF-8
buffer; no Document is built), then ``(band, bucket key, ref)`` rows split by bucket key
into P partitions. ``candidates`` (task per partition): group equal (band, key) rows, emit
star edges (smallest ref, other), routed to the first end's shard group, and each distinct
second end to its own group. ``verify1``/``verify2`` (task per shard group, only when
verifying): a two-sided join. verify1 reads its group's text column once, takes the
candidate rows only and hashes both ends' payloads (exact: sorted distinct shingle hashes,
else the signature): pairs with the first end's payload go to the second end's group, the
second ends' payloads stay in the group's ``own`` file; verify2 compares the two (Jaccard
intersections counted in C) without reading a shard and keeps pairs at or above the
threshold. ``components``: connected components of the surviving edges in star rounds over
edge partitions (:mod:`pipeline.dedup.phases.components`, no task holds all edges); the
root of each component is its smallest ref. ``final``: per shard, ``(position, cluster,
size)`` of documents that have duplicates. ``survivor_*``: each removed member's similarity
to the document its cluster kept: verify2's value where an accepted edge joins them, else
the same two-sided join on the remaining (member, kept document) pairs.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.core.step import StageShard
from pipeline.dedup.minhash import (
    MinHasher,
    Ragged,
    band_keys,
    bucket_edges,
    concat_ragged,
    counts_to_offsets,
    ragged_jaccard,
    take_rows,
    unique_pairs,
)
from pipeline.dedup.phases.components import components_partitions, run_components
from pipeline.dedup.phases.memory import (
    DEFAULT_TASK_MEMORY_GB,
    cap_bytes,
    log_phase,
    rows_per_task,
    task_memory,
)
from pipeline.dedup.phases.partfile import SHUFFLE_FORMAT, read_parts, write_parts
from pipeline.dedup.phases.shuffle import (
    POS_MASK,
    SHIFT,
    Columns,
    ReduceUnit,
    ShardDecisions,
    concat,
    group_of,
    group_shards,
    log_reduce,
    map_info,
    n_groups,
    plan_reduce,
    read_decisions,
    read_ids,
    read_routed,
    read_split,
    route,
    run_final,
    run_map,
    shard_index,
    shards_in_group,
    sorted_shards,
)
from pipeline.dedup.phases.store import (
    check_config,
    done_info,
    mark_done,
    read_table,
    run_phase,
    write_arrow,
    write_json,
    write_table,
)
from pipeline.dedup.text import U64
from pipeline.execution import faults
from pipeline.execution.executor import Executor, Resources

OPTION = "dedup_minhash_v1.task_memory_gb"


@dataclass
class MinHashConfig:
    """Options of the MinHash-LSH job (see :mod:`pipeline.dedup.minhash`)."""

    num_perm: int = 120
    bands: int = 20
    rows: int = 6
    ngram: int = 5
    threshold: float = 0.8
    verify: str = "exact"
    seed: int = 1
    partitions: int = 16
    max_map_tasks: int = 4096
    task_memory_gb: float = DEFAULT_TASK_MEMORY_GB
    batch_bytes: int = 1 << 20


_HASHERS: dict[tuple[int, int, int], MinHasher] = {}


def _hasher(config: MinHashConfig) -> MinHasher:
    """One MinHasher per worker process and configuration (its work buffers are reused)."""
    key = (config.num_perm, config.ngram, config.seed)
    if key not in _HASHERS:
        _HASHERS[key] = MinHasher(config.num_perm, config.ngram, config.seed)
    return _HASHERS[key]


def _rows(shard: StageShard, s: int, config: MinHashConfig) -> tuple[Columns, list[str], dict]:
    """One shard's LSH rows: ``(band, bucket key, ref)`` for every document with words.

    Reads only the ``id`` and ``text`` columns; the signature kernel takes each batch's
    UTF-8 buffer as it is (no Document or ``str`` per document)."""
    hasher = _hasher(config)
    ids: list[str] = []
    bands, keys, refs = [], [], []
    pos = 0
    for batch in shard.text_batches(("id", "text")):
        ids.extend(batch.column(0).to_pylist())
        sigs, counts = hasher.signatures_arrow(batch.column(1), config.batch_bytes)
        k = band_keys(sigs, config.bands, config.rows)
        ok = np.flatnonzero(counts > 0)
        r = (np.int64(s) << SHIFT) | (pos + ok).astype(np.int64)
        bands.append(np.tile(np.arange(config.bands, dtype=np.int16), len(ok)))
        keys.append(k[ok].reshape(-1))
        refs.append(np.repeat(r, config.bands))
        pos += batch.num_rows
    cols = {
        "band": np.concatenate(bands) if bands else np.zeros(0, dtype=np.int16),
        "key": np.concatenate(keys) if keys else np.zeros(0, dtype=U64),
        "ref": np.concatenate(refs) if refs else np.zeros(0, dtype=np.int64),
    }
    return cols, ids, {"docs": len(ids), "rows": int(len(cols["ref"]))}


def _partition(cols: Columns, partitions: int) -> np.ndarray:
    return ((cols["key"] >> U64(SHIFT)) % U64(partitions)).astype(np.int64)


def _edges_path(workdir: str, p: int) -> Path:
    return Path(workdir) / "candidates" / f"p{p:05d}.parquet"


def _joined_paths(workdir: str, phase: str, u: int) -> tuple[Path, Path]:
    """The two partitioned files (:mod:`~pipeline.dedup.phases.partfile`, partition = the
    second end's shard group) in which unit ``u`` of ``phase`` writes pairs with the first
    end's payload: ``(a, b, length)`` per pair, and the payload values of those pairs in
    the same order."""
    base = Path(workdir) / phase / f"u{u:05d}"
    return base.with_suffix(".pairs"), base.with_suffix(".values")


def _verify2_path(workdir: str, h: int) -> Path:
    return Path(workdir) / "verify2" / f"h{h:05d}.parquet"


def _own_path(workdir: str, g: int) -> Path:
    """verify1 unit ``g``'s payloads of its group's second ends: ``(ref, payload)``."""
    return Path(workdir) / "verify1" / f"own{g:05d}.parquet"


def _candidates(workdir: str, p: int, unit: ReduceUnit, n_shards: int, n_units: int,
                config: MinHashConfig) -> None:
    """Star edges of every (band, key) bucket of candidate unit ``p``: map partition
    ``unit[0]``, or split ``unit[1]`` of ``unit[2]`` of it by key (``config.partitions``
    counts the candidate units)."""
    cols = read_split(workdir, unit[0], n_units, "key", unit[1], unit[2])
    empty = np.zeros(0, dtype=np.int64)
    edges = bucket_edges(cols.get("band", empty), cols.get("key", empty).astype(U64),
                         cols.get("ref", empty))
    outputs: list[Path] = []
    info: dict[str, Any] = {}
    if config.verify == "none":
        path = _edges_path(workdir, p)
        write_table(path, {"a": edges[:, 0], "b": edges[:, 1]})
        outputs.append(path)
    else:
        groups = n_groups(n_shards, config.partitions)
        # each pair to its first end's group, and each distinct second end to its own group
        # (b = -1): verify1 hashes both ends of a group's pairs in one read of its shards
        second = np.unique(edges[:, 1])
        ref = np.concatenate([edges[:, 0], second])
        outputs += route(workdir, "candidates", p,
                         {"ref": ref, "b": np.concatenate([edges[:, 1], np.full_like(second, -1)])},
                         n_shards, groups)
        # rows per shard group: what each verify task will hold
        info["routed_rows"] = np.bincount(group_of(ref >> SHIFT, n_shards, groups),
                                          minlength=groups).tolist()
    faults.checkpoint("candidates", p)
    mark_done(workdir, "candidates", f"p{p:05d}", outputs, {"edges": int(len(edges)), **info})


def _texts_at(shard: StageShard, positions: np.ndarray) -> pa.Array:
    """Return the texts of the documents at sorted distinct ``positions`` of ``shard`` as an
    Arrow string array, reading only the text column and taking the wanted rows of each
    batch (no Document is built); reading stops after the last wanted row."""
    parts: list[pa.Array] = []
    start = found = 0
    for batch in shard.text_batches(("text",)):
        hi = int(np.searchsorted(positions, start + batch.num_rows))
        if hi > found:
            parts.append(batch.column(0).take(pa.array(positions[found:hi] - start)))
            found = hi
        start += batch.num_rows
        if found == len(positions):
            break
    if found < len(positions):
        raise ValueError(f"shard {shard.shard_id} has {start} documents, not the "
                         f"{int(positions[-1]) + 1} its MinHash rows say: its stage files "
                         "changed after the map phase; rerun the job into a new output folder")
    return pa.concat_arrays(parts) if parts else pa.array([], pa.string())


def _payload_dtype(config: MinHashConfig) -> type:
    return U64 if config.verify == "exact" else np.uint32


def _payloads(
    refs: np.ndarray, shards: Mapping[int, StageShard], config: MinHashConfig
) -> tuple[np.ndarray, Ragged]:
    """Return the distinct ``refs`` (sorted) and, row for row, their verification payloads:
    sorted distinct shingle hashes (exact Jaccard) or signatures. Every ref's shard must be
    in ``shards``; only the wanted documents' texts are hashed."""
    want = np.unique(refs)
    shard_of = want >> SHIFT
    hasher = _hasher(config)
    rows: list[Ragged] = []
    for s in np.unique(shard_of):
        texts = _texts_at(shards[int(s)], want[shard_of == s] & POS_MASK)
        if config.verify == "exact":
            rows.append(hasher.shingle_sets_arrow(texts, config.batch_bytes))
        else:
            sigs, _ = hasher.signatures_arrow(texts, config.batch_bytes)
            rows.append((sigs.reshape(-1),
                         np.arange(len(texts) + 1, dtype=np.int64) * config.num_perm))
    return want, concat_ragged(rows, _payload_dtype(config))


def _list_rows(col: pa.ChunkedArray | pa.Array) -> Ragged:
    """An Arrow list column as ragged rows (offsets from 0)."""
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks()
    if len(col) == 0:
        return np.zeros(0, dtype=col.type.value_type.to_pandas_dtype()), np.zeros(1, np.int64)
    offsets = col.offsets.to_numpy().astype(np.int64)
    return col.flatten().to_numpy(), offsets - offsets[0]


def _attach_first(
    a: np.ndarray, b: np.ndarray, payloads: tuple[np.ndarray, Ragged], n_shards: int,
    config: MinHashConfig, paths: tuple[Path, Path],
) -> list[Path]:
    """First half of a two-sided join: attach the payload of each pair's ``a`` (from
    ``payloads``, :func:`_payloads` of a superset of ``a``) and write the pairs, grouped by
    the shard group of ``b``, to the two files ``paths`` (:func:`_joined_paths`): one file
    pair per unit, not one per (unit, group)."""
    want, rows = payloads
    groups = n_groups(n_shards, config.partitions)
    gb = group_of(b >> SHIFT, n_shards, groups)
    values, offsets = take_rows(rows, np.searchsorted(want, a))
    lengths = np.diff(offsets)
    write_parts(paths[0], gb, groups, {"a": a, "b": b, "length": lengths})
    write_parts(paths[1], np.repeat(gb, lengths), groups, {"v": values})
    return list(paths)


def _list_array(rows: Ragged) -> pa.Array:
    values, offsets = rows
    return pa.LargeListArray.from_arrays(pa.array(offsets), pa.array(values))


def _read_pairs(paths: Sequence[tuple[Path, Path]], h: int, config: MinHashConfig
                ) -> tuple[np.ndarray, np.ndarray, Ragged]:
    """Read group ``h``'s pairs from every unit's :func:`_attach_first` files ``paths``:
    ``(a, b, a's payloads)``."""
    a_parts, b_parts, rows = [], [], []
    for pairs_path, values_path in paths:
        cols = read_parts(pairs_path, h)
        a_parts.append(cols["a"])
        b_parts.append(cols["b"])
        rows.append((read_parts(values_path, h)["v"], counts_to_offsets(cols["length"])))
    a = np.concatenate(a_parts).astype(np.int64) if a_parts else np.zeros(0, dtype=np.int64)
    b = np.concatenate(b_parts).astype(np.int64) if b_parts else np.zeros(0, dtype=np.int64)
    return a, b, concat_ragged(rows, _payload_dtype(config))


def _compare(first: Ragged, b: np.ndarray, payloads: tuple[np.ndarray, Ragged],
             config: MinHashConfig) -> np.ndarray:
    """Return each pair's similarity: ``first`` (row per pair) against the payload of ``b``
    in ``payloads`` (:func:`_payloads` of a superset of ``b``); shingle Jaccard when
    verifying exactly, else the signature estimate. Whole-array over the pairs."""
    want, rows = payloads
    idx = np.searchsorted(want, b)
    if len(b) and (idx.max() >= len(want) or (want[idx] != b).any()):
        raise ValueError("a verification payload is missing: this workdir was written by "
                         "another version of the MinHash job; rerun into a new output folder")
    second = take_rows(rows, idx)
    if config.verify == "exact":
        return ragged_jaccard(first, second)
    k = config.num_perm  # fraction of equal signature values, as estimated_jaccard gives it
    return (first[0].reshape(-1, k) == second[0].reshape(-1, k)).mean(axis=1)


def _verify1(
    workdir: str, g: int, shards: Mapping[int, StageShard], n_shards: int, config: MinHashConfig,
) -> None:
    """Hash both ends of group ``g``'s candidate pairs in one read of its shards: attach
    each first end's payload to its pairs, routed by the second end's group; keep the
    payloads of the group's second ends (:func:`_own_path`) for verify2."""
    tables = [read_routed(workdir, "candidates", p, g) for p in range(config.partitions)]
    ref, other = concat(tables, "ref", np.int64), concat(tables, "b", np.int64)
    first = other >= 0
    # one pair can come from several bands and partitions: verify it once
    pairs = unique_pairs(np.stack([ref[first], other[first]], axis=1))
    seconds = np.unique(ref[~first])
    want, rows = _payloads(np.concatenate([pairs[:, 0], seconds]), shards, config)
    outputs = _attach_first(pairs[:, 0], pairs[:, 1], (want, rows), n_shards, config,
                            _joined_paths(workdir, "verify1", g))
    own = _own_path(workdir, g)
    write_arrow(own, pa.table({"ref": pa.array(seconds), "payload": _list_array(
        take_rows(rows, np.searchsorted(want, seconds)))}))
    faults.checkpoint("verify1", g)
    mark_done(workdir, "verify1", f"g{g:05d}", [*outputs, own])


def _verify2(workdir: str, h: int, n_shards: int, config: MinHashConfig) -> None:
    """Compare each pair whose second end is in group ``h`` (the payloads of both ends come
    from verify1's files; no shard is read) and keep similar pairs."""
    groups = n_groups(n_shards, config.partitions)
    a, b, first = _read_pairs([_joined_paths(workdir, "verify1", g) for g in range(groups)],
                              h, config)
    t = pq.read_table(_own_path(workdir, h))
    own = (t["ref"].to_numpy().astype(np.int64), _list_rows(t["payload"]))
    sims = _compare(first, b, own, config)
    keep = sims >= config.threshold
    path = _verify2_path(workdir, h)
    write_table(path, {"a": a[keep], "b": b[keep], "similarity": sims[keep]})
    faults.checkpoint("verify2", h)
    mark_done(workdir, "verify2", f"h{h:05d}", [path],
              {"checked": int(len(a)), "accepted": int(keep.sum())})


# ------------------------------------------------- similarity of each member to its survivor
# A removed near-duplicate records its Jaccard to the document its cluster kept (the report
# shows it beside the member). The root is its component's smallest ref and every edge is
# (smaller ref, larger ref), so a member joined to its root by an accepted edge finds the
# similarity verification recorded in verify2's file of the member's group: no payload is
# hashed again. Only the other members (reached through other members, or every member
# when not verifying) join their root in two phases over those pairs: attach the root's
# payload and route to the member's group, attach the member's payload and compare.


def _survivor_pairs_path(workdir: str, g: int) -> Path:
    """Unit ``g``'s (root, member) pairs left to join, partitioned by the root's group."""
    return Path(workdir) / "survivor_pairs" / f"g{g:05d}.parts"


def _known_path(workdir: str, g: int) -> Path:
    """Group ``g``'s members whose similarity verification recorded: ``(ref, similarity)``."""
    return Path(workdir) / "survivor_pairs" / f"known{g:05d}.parquet"


def similarity_path(workdir: str, s: int) -> Path:
    """Return shard index ``s``'s file of ``(ref, similarity)`` of its removed members."""
    return Path(workdir) / "similarity" / f"s{s:05d}.parquet"


def lookup_pairs(
    qa: np.ndarray, qb: np.ndarray, ea: np.ndarray, eb: np.ndarray, values: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Return, for each query pair ``(qa[i], qb[i])``, whether it is one of the pairs
    ``(ea[j], eb[j])`` and that pair's ``values[j]`` (NaN where not). Pairs on either side
    must be distinct; one sort of both sides, no per-pair Python."""
    a = np.concatenate([ea, qa])
    b = np.concatenate([eb, qb])
    query = np.concatenate([np.zeros(len(ea), dtype=bool), np.ones(len(qa), dtype=bool)])
    order = np.lexsort((query, a, b))  # an edge sorts just before the same query pair
    sa, sb, sq = a[order], b[order], query[order]
    hit = sq[1:] & ~sq[:-1] & (sa[1:] == sa[:-1]) & (sb[1:] == sb[:-1])
    found = np.zeros(len(qa), dtype=bool)
    out = np.full(len(qa), np.nan)
    qi = order[1:][hit] - len(ea)
    found[qi] = True
    out[qi] = values[order[:-1][hit]]
    return found, out


def _survivor_pairs(workdir: str, g: int, n_shards: int, config: MinHashConfig) -> None:
    """Pair every non-root member of group ``g``'s shards with its root; keep the
    similarity of pairs verification accepted, route the others to the root's group."""
    groups = n_groups(n_shards, config.partitions)
    roots, members = [], []
    for s in shards_in_group(g, n_shards, groups):
        dec = read_decisions(workdir, s)
        moved = dec["cluster"] != dec["ref"]
        roots.append(dec["cluster"][moved].astype(np.int64))
        members.append(dec["ref"][moved].astype(np.int64))
    root = np.concatenate(roots) if roots else np.zeros(0, dtype=np.int64)
    member = np.concatenate(members) if members else np.zeros(0, dtype=np.int64)
    known = np.zeros(len(member), dtype=bool)
    sims = np.zeros(len(member), dtype=np.float64)
    if config.verify != "none":  # verify2's file h holds the accepted edges (a, b in h)
        edges = read_table(_verify2_path(workdir, g))
        known, sims = lookup_pairs(root, member, edges["a"].astype(np.int64),
                                   edges["b"].astype(np.int64), edges["similarity"])
    known_path = _known_path(workdir, g)
    write_table(known_path, {"ref": member[known], "similarity": sims[known]})
    rest = ~known
    path = _survivor_pairs_path(workdir, g)
    write_parts(path, group_of(root[rest] >> SHIFT, n_shards, groups), groups,
                {"a": root[rest], "b": member[rest]})
    faults.checkpoint("survivor_pairs", g)
    mark_done(workdir, "survivor_pairs", f"g{g:05d}", [known_path, path],
              {"known": int(known.sum()), "joined": int(rest.sum())})


def _survivor_payloads(
    workdir: str, h: int, shards: Mapping[int, StageShard], n_shards: int, config: MinHashConfig,
) -> None:
    """Attach the payload of every root in group ``h`` of the pairs left to join; route the
    pairs to the members' groups."""
    groups = n_groups(n_shards, config.partitions)
    tables = [read_parts(_survivor_pairs_path(workdir, g), h) for g in range(groups)]
    a, b = concat(tables, "a", np.int64), concat(tables, "b", np.int64)
    outputs = _attach_first(a, b, _payloads(a, shards, config), n_shards, config,
                            _joined_paths(workdir, "survivor_payloads", h))
    faults.checkpoint("survivor_payloads", h)
    mark_done(workdir, "survivor_payloads", f"h{h:05d}", outputs)


def _survivor_similarity(
    workdir: str, g: int, shards: Mapping[int, StageShard], n_shards: int, config: MinHashConfig,
) -> None:
    """Compare every joined member of group ``g`` with its root, add the members whose
    similarity was known; one similarity file per shard."""
    groups = n_groups(n_shards, config.partitions)
    _, b, first = _read_pairs(
        [_joined_paths(workdir, "survivor_payloads", h) for h in range(groups)], g, config)
    sims = _compare(first, b, _payloads(b, shards, config), config)
    known = read_table(_known_path(workdir, g))
    b = np.concatenate([b, known["ref"].astype(np.int64)])
    sims = np.concatenate([sims, known["similarity"].astype(np.float64)])
    order = np.argsort(b, kind="stable")
    b, sims = b[order], sims[order]
    outputs = []
    for s in shards_in_group(g, n_shards, groups):
        lo, hi = np.searchsorted(b >> SHIFT, [s, s + 1])
        path = similarity_path(workdir, s)
        write_table(path, {"ref": b[lo:hi], "similarity": sims[lo:hi]})
        outputs.append(path)
    faults.checkpoint("survivor_similarity", g)
    mark_done(workdir, "survivor_similarity", f"g{g:05d}", outputs)


def run_survivor_similarity(
    workdir: str, ordered: Sequence[StageShard], config: MinHashConfig, executor: Executor,
    resources: Resources | None = None,
) -> None:
    """Record each removed member's similarity to its cluster's survivor
    (:func:`similarity_path`), in three phases through ``executor``; ``resources`` is what
    one unit declares (a group's pairs with their payloads, as for verification). Needs
    verify2's files when verifying (the accepted edges' similarities)."""
    S = len(ordered)
    groups = n_groups(S, config.partitions)
    units = [f"g{g:05d}" for g in range(groups)]
    run_phase(workdir, "survivor_pairs", units, _survivor_pairs,
              [(workdir, g, S, config) for g in range(groups)], executor, resources)
    run_phase(workdir, "survivor_payloads", [f"h{h:05d}" for h in range(groups)],
              _survivor_payloads,
              [(workdir, h, group_shards(ordered, h, S, groups), S, config)
               for h in range(groups)], executor, resources)
    run_phase(workdir, "survivor_similarity", units, _survivor_similarity,
              [(workdir, g, group_shards(ordered, g, S, groups), S, config)
               for g in range(groups)], executor, resources)


def _edge_files(workdir: str, n_shards: int, config: MinHashConfig) -> list[Path]:
    """The accepted edges: candidate partitions without verification, else verify2's files."""
    if config.verify == "none":
        return [_edges_path(workdir, p) for p in range(config.partitions)]
    return [_verify2_path(workdir, h) for h in range(n_groups(n_shards, config.partitions))]


def prepare_minhash(
    shards: Mapping[int, StageShard], workdir: str, config: MinHashConfig, executor: Executor
) -> dict[str, Any]:
    """Run the MinHash-LSH job over ``shards`` under ``workdir``; return a summary.

    Every phase fans out through ``executor``; finished units of an earlier run are reused.
    """
    if config.bands * config.rows > config.num_perm:
        raise ValueError("bands * rows must not exceed num_perm")
    if config.verify not in ("exact", "signature", "none"):
        raise ValueError(f"unknown verify mode {config.verify!r}")
    ordered = sorted_shards(shards)
    S, P = len(ordered), config.partitions
    cap = cap_bytes(config.task_memory_gb)
    rows_per_task(cap, "minhash.candidates", OPTION)  # a cap no split can meet fails first
    os.makedirs(workdir, exist_ok=True)
    check_config(workdir, {"job": "minhash", "shuffle_format": SHUFFLE_FORMAT,
                           **config.__dict__,
                           "shards": [s.shard_id for s in ordered],
                           "files": [list(s.files) for s in ordered]})
    M = run_map(workdir, ordered, P, config, config.max_map_tasks, _rows, _partition,
                True, executor, cap)
    units, declared = plan_reduce(workdir, M, P, cap, "minhash.candidates", OPTION)
    # from here on "partitions" counts the candidate units (P unless a partition was split)
    map_partitions, config = P, replace(config, partitions=len(units))
    P = config.partitions
    run_phase(workdir, "candidates", [f"p{p:05d}" for p in range(P)], _candidates,
              [(workdir, p, unit, S, M, config) for p, unit in enumerate(units)], executor,
              Resources(memory=declared))
    log_reduce(workdir, "candidates", units, declared, map_partitions)
    groups = n_groups(S, P)
    # a group's candidate pairs with the payload of one end (the survivor phases join
    # fewer pairs the same way); units get only their group's shards, not the job's list
    routed = np.zeros(groups, dtype=np.int64)  # rows routed per group (pairs + second ends): a bound
    if config.verify != "none":
        for p in range(P):
            routed += done_info(workdir, "candidates", f"p{p:05d}").get("routed_rows", 0)
    verify = Resources(memory=task_memory(int(routed.max(initial=0)), "minhash.verify"))
    if config.verify != "none":
        run_phase(workdir, "verify1", [f"g{g:05d}" for g in range(groups)], _verify1,
                  [(workdir, g, group_shards(ordered, g, S, groups), S, config)
                   for g in range(groups)], executor, verify)
        log_phase(workdir, "verify1", groups, verify.memory, routed_rows=int(routed.sum()))
        run_phase(workdir, "verify2", [f"h{h:05d}" for h in range(groups)], _verify2,
                  [(workdir, h, S, config) for h in range(groups)], executor, verify)
        log_phase(workdir, "verify2", groups, verify.memory)
    edge_files = _edge_files(workdir, S, config)
    cc = components_partitions(edge_files, P, cap, OPTION)
    comp = run_components(workdir, edge_files, cc, S, groups, executor)
    run_final(workdir, "components", cc, S, groups, executor)
    run_survivor_similarity(workdir, ordered, config, executor, verify)
    summary = {
        "documents": map_info(workdir, M, "docs"),
        "bucket_rows": map_info(workdir, M, "rows"),
        "candidate_edges": sum(done_info(workdir, "candidates", f"p{p:05d}")["edges"]
                               for p in range(P)),
        **comp,
    }
    if config.verify != "none":
        summary["verified_edges"] = sum(done_info(workdir, "verify2", f"h{h:05d}")["accepted"]
                                        for h in range(groups))
    write_json(Path(workdir) / "summary.json", summary)
    return summary


def load_minhash(workdir: str, shard_id: str) -> ShardDecisions:
    """Return, per document id of the shard, ``(cluster ref, cluster size, own ref,
    similarity to the cluster's survivor)`` (similarity None for survivors and singletons)."""
    s = shard_index(workdir, shard_id)
    dec = read_decisions(workdir, s)
    sim_table = read_table(similarity_path(workdir, s))
    sims = dict(zip(sim_table["ref"].tolist(), sim_table["similarity"].tolist(), strict=True))
    values: dict[int, Any] = {
        int(r) & POS_MASK: (int(c), int(z), int(r), sims.get(int(r)))
        for r, c, z in zip(dec["ref"], dec["cluster"], dec["size"], strict=True)
    }
    base = s << SHIFT
    return ShardDecisions(read_ids(workdir, s), values,
                          default=lambda pos: (base | pos, 1, base | pos, None))
