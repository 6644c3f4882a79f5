"""MinHash-LSH job: map -> candidates -> [verify1 -> verify2] -> components -> final ->
survivor similarity.

``map``: signatures (vectorised, in batches), then ``(band, bucket key, ref)`` rows split
by bucket key into P files. ``candidates`` (task per partition): group equal (band, key)
rows, emit star edges (smallest ref, other). ``verify1``/``verify2`` (task per shard
group, only when verifying): a two-sided join that attaches each endpoint's shingle set
(exact) or signature, recomputed from the text of the needed documents only, and keeps
pairs at or above the threshold. ``components``: connected components of the surviving
edges in star rounds over edge partitions (:mod:`pipeline.dedup.phases.components`, no
task holds all edges); the root of each component is its smallest ref. ``final``: per shard,
``(position, cluster, size)`` of documents that have duplicates. ``survivor_*``: the same
two-sided join on (member, kept document) pairs, so each removed member records its
similarity to the document its cluster kept.
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
    band_keys,
    batch_bounds,
    bucket_edges,
    estimated_jaccard,
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
    read_split,
    route,
    routed_path,
    run_final,
    run_map,
    shard_index,
    shards_in_group,
    sorted_shards,
    split_write,
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
from pipeline.dedup.text import U64, jaccard
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
    """One shard's LSH rows: ``(band, bucket key, ref)`` for every document with words."""
    hasher = _hasher(config)
    ids: list[str] = []
    texts: list[str] = []
    bands, keys, refs = [], [], []
    size = 0
    pos = 0

    def flush() -> None:
        nonlocal pos
        if not texts:
            return
        sigs, counts = hasher.signatures_batched(texts, config.batch_bytes)
        k = band_keys(sigs, config.bands, config.rows)
        ok = np.flatnonzero(counts > 0)
        r = (np.int64(s) << SHIFT) | (pos + ok).astype(np.int64)
        bands.append(np.tile(np.arange(config.bands, dtype=np.int16), len(ok)))
        keys.append(k[ok].reshape(-1))
        refs.append(np.repeat(r, config.bands))
        pos += len(texts)
        texts.clear()

    for doc in shard.documents():
        ids.append(doc.id)
        texts.append(doc.text)
        size += len(doc.text)
        if size >= config.batch_bytes:
            flush()
            size = 0
    flush()
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


def _verify1_path(workdir: str, g: int, h: int) -> Path:
    return Path(workdir) / "verify1" / f"g{g:05d}" / f"h{h:05d}.parquet"


def _verify2_path(workdir: str, h: int) -> Path:
    return Path(workdir) / "verify2" / f"h{h:05d}.parquet"


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
        outputs += route(workdir, "candidates", p, {"ref": edges[:, 0], "b": edges[:, 1]},
                         n_shards, groups)
        # pairs per shard group: what each verify task will hold
        info["routed_rows"] = np.bincount(group_of(edges[:, 0] >> SHIFT, n_shards, groups),
                                          minlength=groups).tolist()
    faults.checkpoint("candidates", p)
    mark_done(workdir, "candidates", f"p{p:05d}", outputs, {"edges": int(len(edges)), **info})


def _payloads(
    shard: StageShard, s: int, positions: np.ndarray, config: MinHashConfig
) -> dict[int, np.ndarray]:
    """Return the verification payload of the documents at ``positions`` of one shard.

    The payload is the sorted distinct shingle hashes (exact Jaccard) or the signature.
    """
    want = set(positions.tolist())
    texts: list[str] = []
    refs: list[int] = []
    for pos, doc in enumerate(shard.documents()):
        if pos in want:
            texts.append(doc.text)
            refs.append((s << SHIFT) | pos)
    hasher = _hasher(config)
    out: dict[int, np.ndarray] = {}
    if config.verify == "exact":
        for start, end in batch_bounds(texts, config.batch_bytes):
            sets = hasher.shingler.shingle_sets(texts[start:end])
            for r, st in zip(refs[start:end], sets, strict=True):
                out[r] = st
    else:
        sigs, _ = hasher.signatures_batched(texts, config.batch_bytes)
        out = {r: sigs[i] for i, r in enumerate(refs)}
    return out


def _list_column(arrays: list[np.ndarray], dtype: Any) -> pa.Array:
    offsets = np.zeros(len(arrays) + 1, dtype=np.int64)
    np.cumsum([len(a) for a in arrays], out=offsets[1:])
    values = np.concatenate(arrays).astype(dtype) if arrays else np.zeros(0, dtype=dtype)
    return pa.LargeListArray.from_arrays(pa.array(offsets), pa.array(values))


def _read_list_column(path: Path, name: str) -> list[np.ndarray]:
    col = pq.read_table(path, columns=[name]).column(name).combine_chunks()
    offsets = col.offsets.to_numpy()
    values = col.values.to_numpy()
    return [values[offsets[i] : offsets[i + 1]] for i in range(len(offsets) - 1)]


def _attach_first(
    workdir: str, a: np.ndarray, b: np.ndarray, g: int, shards: Mapping[int, StageShard],
    n_shards: int, config: MinHashConfig, path_of: Any,
) -> list[Path]:
    """First half of a two-sided join: attach the payload of each pair's ``a`` (a document of
    group ``g``) and write the pairs, split by the group of ``b``, to ``path_of(h)``."""
    payload: dict[int, np.ndarray] = {}
    for s in shards_in_group(g, n_shards, n_groups(n_shards, config.partitions)):
        mine = a[(a >> SHIFT) == s]
        if len(mine):
            payload.update(_payloads(shards[s], s, np.unique(mine & POS_MASK), config))
    groups = n_groups(n_shards, config.partitions)
    gb = group_of(b >> SHIFT, n_shards, groups)
    outputs = []
    dtype = U64 if config.verify == "exact" else np.uint32
    for h in range(groups):
        sel = np.flatnonzero(gb == h)
        path = path_of(h)
        write_arrow(path, pa.table({
            "a": pa.array(a[sel]), "b": pa.array(b[sel]),
            "payload": _list_column([payload[int(x)] for x in a[sel]], dtype),
        }))
        outputs.append(path)
    return outputs


def _similarities(
    paths: Sequence[Path], h: int, shards: Mapping[int, StageShard], n_shards: int,
    config: MinHashConfig,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Second half: read the pairs :func:`_attach_first` sent to group ``h``, attach each
    ``b``'s payload and return ``(a, b, similarity)`` (shingle Jaccard when verifying
    exactly, else the signature estimate)."""
    a_parts, b_parts, pay_parts = [], [], []
    for path in paths:
        t = read_table(path)
        a_parts.append(t["a"].astype(np.int64))
        b_parts.append(t["b"].astype(np.int64))
        pay_parts.extend(_read_list_column(path, "payload"))
    a = np.concatenate(a_parts) if a_parts else np.zeros(0, dtype=np.int64)
    b = np.concatenate(b_parts) if b_parts else np.zeros(0, dtype=np.int64)
    payload_b: dict[int, np.ndarray] = {}
    for s in shards_in_group(h, n_shards, n_groups(n_shards, config.partitions)):
        mine = b[(b >> SHIFT) == s]
        if len(mine):
            payload_b.update(_payloads(shards[s], s, np.unique(mine & POS_MASK), config))
    sims = np.empty(len(a), dtype=np.float64)
    for i in range(len(a)):
        pb = payload_b[int(b[i])]
        if config.verify == "exact":
            sims[i] = jaccard(pay_parts[i], pb)
        else:
            sims[i] = float(estimated_jaccard(pay_parts[i], pb))
    return a, b, sims


def _verify1(
    workdir: str, g: int, shards: Mapping[int, StageShard], n_shards: int, config: MinHashConfig,
) -> None:
    """Attach the payload of each edge's first endpoint (in group ``g``); route by the second."""
    tables = [read_table(routed_path(workdir, "candidates", p, g)) for p in range(config.partitions)]
    # one pair can come from several bands and partitions: verify it once
    pairs = unique_pairs(np.stack([concat(tables, "ref", np.int64), concat(tables, "b", np.int64)],
                                  axis=1))
    outputs = _attach_first(workdir, pairs[:, 0], pairs[:, 1], g, shards, n_shards, config,
                            lambda h: _verify1_path(workdir, g, h))
    faults.checkpoint("verify1", g)
    mark_done(workdir, "verify1", f"g{g:05d}", outputs)


def _verify2(
    workdir: str, h: int, shards: Mapping[int, StageShard], n_shards: int, config: MinHashConfig,
) -> None:
    """Attach the second endpoint's payload (in group ``h``) and keep similar pairs."""
    groups = n_groups(n_shards, config.partitions)
    a, b, sims = _similarities([_verify1_path(workdir, g, h) for g in range(groups)], h,
                               shards, n_shards, config)
    keep = sims >= config.threshold
    path = _verify2_path(workdir, h)
    write_table(path, {"a": a[keep], "b": b[keep], "similarity": sims[keep]})
    faults.checkpoint("verify2", h)
    mark_done(workdir, "verify2", f"h{h:05d}", [path],
              {"checked": int(len(a)), "accepted": int(keep.sum())})


# ------------------------------------------------- similarity of each member to its survivor
# A removed near-duplicate records its Jaccard to the document its cluster kept (the report
# shows it beside the member). Members join their cluster's root in three small phases over
# the clustered documents only: route (member, root) to the root's group, attach the root's
# payload and route to the member's group, attach the member's payload and compare.


def _survivor_path(workdir: str, phase: str, g: int, h: int) -> Path:
    return Path(workdir) / phase / f"g{g:05d}" / f"h{h:05d}.parquet"


def similarity_path(workdir: str, s: int) -> Path:
    """Return shard index ``s``'s file of ``(ref, similarity)`` of its removed members."""
    return Path(workdir) / "similarity" / f"s{s:05d}.parquet"


def _survivor_pairs(workdir: str, g: int, n_shards: int, config: MinHashConfig) -> None:
    """Route every non-root member of group ``g``'s shards, paired with its root, to the
    root's group."""
    groups = n_groups(n_shards, config.partitions)
    roots, members = [], []
    for s in shards_in_group(g, n_shards, groups):
        dec = read_decisions(workdir, s)
        moved = dec["cluster"] != dec["ref"]
        roots.append(dec["cluster"][moved].astype(np.int64))
        members.append(dec["ref"][moved].astype(np.int64))
    root = np.concatenate(roots) if roots else np.zeros(0, dtype=np.int64)
    member = np.concatenate(members) if members else np.zeros(0, dtype=np.int64)
    outputs = split_write(group_of(root >> SHIFT, n_shards, groups), groups,
                          lambda h: _survivor_path(workdir, "survivor_pairs", g, h),
                          {"a": root, "b": member})
    mark_done(workdir, "survivor_pairs", f"g{g:05d}", outputs)


def _survivor_payloads(
    workdir: str, h: int, shards: Mapping[int, StageShard], n_shards: int, config: MinHashConfig,
) -> None:
    """Attach the payload of every root in group ``h``; route the pairs to the members'
    groups."""
    groups = n_groups(n_shards, config.partitions)
    tables = [read_table(_survivor_path(workdir, "survivor_pairs", g, h)) for g in range(groups)]
    outputs = _attach_first(workdir, concat(tables, "a", np.int64), concat(tables, "b", np.int64),
                            h, shards, n_shards, config,
                            lambda g: _survivor_path(workdir, "survivor_payloads", h, g))
    faults.checkpoint("survivor_payloads", h)
    mark_done(workdir, "survivor_payloads", f"h{h:05d}", outputs)


def _survivor_similarity(
    workdir: str, g: int, shards: Mapping[int, StageShard], n_shards: int, config: MinHashConfig,
) -> None:
    """Compare every member of group ``g`` with its root; one similarity file per shard."""
    groups = n_groups(n_shards, config.partitions)
    _, b, sims = _similarities(
        [_survivor_path(workdir, "survivor_payloads", h, g) for h in range(groups)], g,
        shards, n_shards, config)
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
    one unit declares (a group's pairs with their payloads, as for verification)."""
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
    check_config(workdir, {"job": "minhash", **config.__dict__,
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
    routed = np.zeros(groups, dtype=np.int64)  # candidate pairs per group, an upper bound
    if config.verify != "none":
        for p in range(P):
            routed += done_info(workdir, "candidates", f"p{p:05d}").get("routed_rows", 0)
    verify = Resources(memory=task_memory(int(routed.max(initial=0)), "minhash.verify"))
    if config.verify != "none":
        run_phase(workdir, "verify1", [f"g{g:05d}" for g in range(groups)], _verify1,
                  [(workdir, g, group_shards(ordered, g, S, groups), S, config)
                   for g in range(groups)], executor, verify)
        log_phase(workdir, "verify1", groups, verify.memory, candidate_pairs=int(routed.sum()))
        run_phase(workdir, "verify2", [f"h{h:05d}" for h in range(groups)], _verify2,
                  [(workdir, h, group_shards(ordered, h, S, groups), S, config)
                   for h in range(groups)], executor, verify)
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
