"""MinHash-LSH job: map -> candidates -> [verify1 -> verify2] -> components -> final.

``map``: signatures (vectorised, in batches), then ``(band, bucket key, ref)`` rows split
by bucket key into P files. ``candidates`` (task per partition): group equal (band, key)
rows, emit star edges (smallest ref, other). ``verify1``/``verify2`` (task per shard
group, only when verifying): a two-sided join that attaches each endpoint's shingle set
(exact) or signature, recomputed from the text of the needed documents only, and keeps
pairs at or above the threshold. ``components``: connected components of the surviving
edges in star rounds over edge partitions (:mod:`pipeline.dedup.phases.components`, no
task holds all edges); the root of each component is its smallest ref. ``final``: per shard,
``(position, cluster, size)`` of documents that have duplicates.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
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
from pipeline.dedup.phases.components import run_components
from pipeline.dedup.phases.shuffle import (
    POS_MASK,
    SHIFT,
    Columns,
    ShardDecisions,
    concat,
    group_of,
    map_info,
    n_groups,
    part_path,
    read_decisions,
    read_ids,
    route,
    routed_path,
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
from pipeline.dedup.text import U64, jaccard
from pipeline.execution import faults
from pipeline.execution.executor import Executor


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


def _candidates(workdir: str, p: int, n_shards: int, n_units: int, config: MinHashConfig) -> None:
    """Star edges of every (band, key) bucket of partition ``p``."""
    tables = [read_table(part_path(workdir, "map", p, u)) for u in range(n_units)]
    edges = bucket_edges(concat(tables, "band", np.int64), concat(tables, "key", U64),
                         concat(tables, "ref", np.int64))
    outputs = []
    if config.verify == "none":
        path = _edges_path(workdir, p)
        write_table(path, {"a": edges[:, 0], "b": edges[:, 1]})
        outputs.append(path)
    else:
        groups = n_groups(n_shards, config.partitions)
        outputs += route(workdir, "candidates", p, {"ref": edges[:, 0], "b": edges[:, 1]},
                         n_shards, groups)
    faults.checkpoint("candidates", p)
    mark_done(workdir, "candidates", f"p{p:05d}", outputs, {"edges": int(len(edges))})


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


def _verify1(
    workdir: str, g: int, shards: Sequence[StageShard], n_shards: int, config: MinHashConfig,
) -> None:
    """Attach the payload of each edge's first endpoint (in group ``g``); route by the second."""
    tables = [read_table(routed_path(workdir, "candidates", p, g)) for p in range(config.partitions)]
    # one pair can come from several bands and partitions: verify it once
    pairs = unique_pairs(np.stack([concat(tables, "ref", np.int64), concat(tables, "b", np.int64)],
                                  axis=1))
    a, b = pairs[:, 0], pairs[:, 1]
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
        path = _verify1_path(workdir, g, h)
        write_arrow(path, pa.table({
            "a": pa.array(a[sel]), "b": pa.array(b[sel]),
            "payload": _list_column([payload[int(x)] for x in a[sel]], dtype),
        }))
        outputs.append(path)
    faults.checkpoint("verify1", g)
    mark_done(workdir, "verify1", f"g{g:05d}", outputs)


def _verify2(
    workdir: str, h: int, shards: Sequence[StageShard], n_shards: int, config: MinHashConfig,
) -> None:
    """Attach the second endpoint's payload (in group ``h``) and keep similar pairs."""
    groups = n_groups(n_shards, config.partitions)
    a_parts, b_parts, pay_parts = [], [], []
    for g in range(groups):
        path = _verify1_path(workdir, g, h)
        t = read_table(path)
        a_parts.append(t["a"].astype(np.int64))
        b_parts.append(t["b"].astype(np.int64))
        pay_parts.extend(_read_list_column(path, "payload"))
    a = np.concatenate(a_parts) if a_parts else np.zeros(0, dtype=np.int64)
    b = np.concatenate(b_parts) if b_parts else np.zeros(0, dtype=np.int64)
    payload_b: dict[int, np.ndarray] = {}
    for s in shards_in_group(h, n_shards, groups):
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
    keep = sims >= config.threshold
    path = _verify2_path(workdir, h)
    write_table(path, {"a": a[keep], "b": b[keep], "similarity": sims[keep]})
    faults.checkpoint("verify2", h)
    mark_done(workdir, "verify2", f"h{h:05d}", [path],
              {"checked": int(len(a)), "accepted": int(keep.sum())})


def _edge_files(workdir: str, n_shards: int, config: MinHashConfig) -> list[Path]:
    """The accepted edges: candidate partitions without verification, else verify2's files."""
    if config.verify == "none":
        return [_edges_path(workdir, p) for p in range(config.partitions)]
    return [_verify2_path(workdir, h) for h in range(n_groups(n_shards, config.partitions))]


def prepare_minhash(
    shards: Sequence[StageShard], workdir: str, config: MinHashConfig, executor: Executor
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
    os.makedirs(workdir, exist_ok=True)
    check_config(workdir, {"job": "minhash", **config.__dict__,
                           "shards": [s.shard_id for s in ordered],
                           "files": [list(s.files) for s in ordered]})
    M = run_map(workdir, ordered, P, config, config.max_map_tasks, _rows, _partition,
                True, executor)
    run_phase(workdir, "candidates", [f"p{p:05d}" for p in range(P)], _candidates,
              [(workdir, p, S, M, config) for p in range(P)], executor)
    groups = n_groups(S, P)
    if config.verify != "none":
        run_phase(workdir, "verify1", [f"g{g:05d}" for g in range(groups)], _verify1,
                  [(workdir, g, ordered, S, config) for g in range(groups)], executor)
        run_phase(workdir, "verify2", [f"h{h:05d}" for h in range(groups)], _verify2,
                  [(workdir, h, ordered, S, config) for h in range(groups)], executor)
    comp = run_components(workdir, _edge_files(workdir, S, config), P, S, groups, executor)
    run_final(workdir, "components", P, S, groups, executor)
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
    """Return, per document id of the shard, ``(cluster ref, cluster size, own ref)``."""
    s = shard_index(workdir, shard_id)
    dec = read_decisions(workdir, s)
    values: dict[int, Any] = {
        int(r) & POS_MASK: (int(c), int(z), int(r))
        for r, c, z in zip(dec["ref"], dec["cluster"], dec["size"], strict=True)
    }
    base = s << SHIFT
    return ShardDecisions(read_ids(workdir, s), values,
                          default=lambda pos: (base | pos, 1, base | pos))
