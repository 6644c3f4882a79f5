"""Cross-shard deduplication on Ray: the ``prepare``/``load`` halves of the dedup steps.

Documents are addressed by ``ref = shard_index << 32 | position``: ``shard_index`` is
the shard's rank among the job's shards sorted by id, ``position`` its place in the
shard's stage order. Smaller ref = earlier in the deterministic (shard, position) order,
which decides which copy of a duplicate survives.

Every job is a chain of resumable phases (:mod:`pipeline.dedup.store`); no process ever
holds more than one batch of documents, one map task's rows, one partition of the
shuffle, or (for MinHash) the duplicate edges. Map tasks each read a contiguous run of
shards (at most ``max_map_tasks`` tasks, so the shuffle has ``tasks x P`` files however
many shards there are):

exact
    ``map``: 128-bit key per document, rows ``(key, ref)`` split into P partition files
    by key. ``reduce`` (task per partition): sort, keep the smallest ref
    of each key, emit the others routed to shard groups. ``final`` (task per group): one
    decision file per shard.
lines
    ``map``: distinct normalised-line hashes of the shard with their counts, split by hash
    into P files. ``reduce``: total count per hash over all shards; hashes with at least
    ``min_count`` occurrences are emitted for each shard that has them. ``final``: the
    shard's frequent line hashes.
minhash
    ``map``: signatures (vectorised, in batches), then ``(band, bucket key, ref)`` rows
    split by bucket key into P files. ``candidates`` (task per partition): group equal
    (band, key) rows, emit star edges (smallest ref, other). ``verify1``/``verify2``
    (task per shard group, only when verifying): a two-sided join that attaches each
    endpoint's shingle set (exact) or signature, recomputed from the text of the needed
    documents only, and keeps pairs at or above the threshold. ``components`` (one task):
    union-find over the surviving edges; the root of each component is its smallest ref.
    ``final``: per shard, ``(position, cluster, size)`` of documents that have duplicates.
"""

from __future__ import annotations

import glob
import os
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.dedup.components import components_of_refs
from pipeline.dedup.lines import line_hashes
from pipeline.dedup.minhash import (
    MinHasher,
    band_keys,
    batch_bounds,
    bucket_edges,
    estimated_jaccard,
    unique_pairs,
)
from pipeline.dedup.store import (
    check_config,
    done_info,
    is_done,
    load_config,
    mark_done,
    maybe_fail,
    read_table,
    run_phase,
    write_json,
    write_table,
)
from pipeline.dedup.text import U64, document_key, jaccard
from pipeline.core.step import StageShard

SHIFT = 32
POS_MASK = (1 << SHIFT) - 1
FailAt = tuple[str, int] | None


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


MAX_GROUPS = 256


def n_groups(n_shards: int, partitions: int) -> int:
    """Number of shard groups the reducers route decisions into (at most 256)."""
    return max(1, min(n_shards, partitions, MAX_GROUPS))


def group_of(shard_index: np.ndarray | int, n_shards: int, groups: int) -> np.ndarray | int:
    """Return the group of a shard index (contiguous ranges of shards)."""
    return (np.asarray(shard_index, dtype=np.int64) * groups) // max(n_shards, 1)


def shards_in_group(g: int, n_shards: int, groups: int) -> list[int]:
    """Return the shard indexes of group ``g``."""
    return [s for s in range(n_shards) if (s * groups) // n_shards == g]


def _part(workdir: str, phase: str, p: int, u: int) -> Path:
    return Path(workdir) / phase / f"p{p:05d}" / f"m{u:05d}.parquet"


def _routed(workdir: str, phase: str, p: int, g: int) -> Path:
    return Path(workdir) / phase / f"p{p:05d}" / f"g{g:05d}.parquet"


def _ids_path(workdir: str, s: int) -> Path:
    return Path(workdir) / "ids" / f"s{s:06d}.parquet"


def _decision_path(workdir: str, s: int) -> Path:
    return Path(workdir) / "decisions" / f"s{s:06d}.parquet"


def _concat(tables: list[dict[str, np.ndarray]], name: str, dtype: Any) -> np.ndarray:
    parts = [t[name] for t in tables if len(t[name])]
    return np.concatenate(parts).astype(dtype, copy=False) if parts else np.zeros(0, dtype=dtype)


def _route(
    workdir: str, phase: str, p: int, columns: dict[str, np.ndarray], n_shards: int, groups: int
) -> list[Path]:
    """Split rows by the group of ``columns['ref']``'s shard; write one file per group."""
    grp = group_of(columns["ref"] >> SHIFT, n_shards, groups)
    return _split_write(grp, groups, lambda g: _routed(workdir, phase, p, g), columns)


def _split_write(
    key: np.ndarray, n: int, path_of: Any, columns: dict[str, np.ndarray]
) -> list[Path]:
    """Write the rows with ``key == i`` to ``path_of(i)`` for every ``i < n`` (row order kept)."""
    order = np.argsort(key, kind="stable")
    bounds = np.searchsorted(key[order], np.arange(n + 1))
    out = []
    for i in range(n):
        sel = order[bounds[i] : bounds[i + 1]]
        path = path_of(i)
        write_table(path, {k: v[sel] for k, v in columns.items()})
        out.append(path)
    return out


def _write_partitions(
    workdir: str, phase: str, u: int, part: np.ndarray, partitions: int,
    columns: dict[str, np.ndarray],
) -> list[Path]:
    """Write rows to ``partitions`` files by ``part`` (the partition of each row)."""
    return _split_write(part, partitions, lambda p: _part(workdir, phase, p, u), columns)


def _finalize_group(
    workdir: str, phase_in: str, g: int, partitions: int, n_shards: int, groups: int,
    fail_at: FailAt,
) -> None:
    """Gather a group's routed rows from every partition into one decision file per shard."""
    tables = [read_table(_routed(workdir, phase_in, p, g)) for p in range(partitions)]
    names = list(tables[0]) if tables else ["ref"]
    cols = {n: _concat(tables, n, tables[0][n].dtype) for n in names}
    order = np.argsort(cols["ref"], kind="stable")
    cols = {k: v[order] for k, v in cols.items()}
    shard = cols["ref"] >> SHIFT
    outputs = []
    for s in shards_in_group(g, n_shards, groups):
        lo, hi = np.searchsorted(shard, [s, s + 1])
        path = _decision_path(workdir, s)
        write_table(path, {k: v[lo:hi] for k, v in cols.items()})
        outputs.append(path)
    maybe_fail(fail_at, "final", g)
    mark_done(workdir, "final", f"g{g:05d}", outputs)


def _run_final(workdir: str, phase_in: str, partitions: int, n_shards: int, fail_at: FailAt) -> None:
    groups = n_groups(n_shards, partitions)
    units = [f"g{g:05d}" for g in range(groups)]
    args = [(workdir, phase_in, g, partitions, n_shards, groups, fail_at) for g in range(groups)]
    run_phase(workdir, "final", units, _finalize_group, args)


def _write_ids(workdir: str, s: int, ids: list[str]) -> Path:
    path = _ids_path(workdir, s)
    write_table(path, {"id": np.array(ids, dtype=object)})
    return path


def _shard_index(workdir: str, shard_id: str) -> int:
    config = load_config(workdir)
    try:
        return config["shards"].index(shard_id)
    except ValueError:
        raise KeyError(f"shard {shard_id!r} was not part of the prepared job in {workdir}") from None


# --------------------------------------------------------------------------- decisions


class ShardDecisions:
    """Per-document decisions for one shard, looked up by document id.

    Documents are matched by id; if a shard repeats an id, its occurrences are matched in
    order (which assumes the shard is read from its start, as the runner does).
    """

    def __init__(self, ids: Sequence[str], values: dict[int, Any], default: Any = None) -> None:
        self._by_id: dict[str, Any] = {}
        self._repeats: dict[str, list[Any]] = {}
        for pos, doc_id in enumerate(ids):
            v = values.get(pos, default)
            if callable(v):
                v = v(pos)
            if doc_id in self._by_id:
                self._repeats.setdefault(doc_id, [self._by_id[doc_id]]).append(v)
            else:
                self._by_id[doc_id] = v
        self._seen: dict[str, int] = defaultdict(int)

    def get(self, doc_id: str) -> Any:
        """Return the decision for ``doc_id``; KeyError if the shard had no such document."""
        if doc_id in self._repeats:
            k = self._seen[doc_id]
            self._seen[doc_id] = k + 1
            reps = self._repeats[doc_id]
            return reps[min(k, len(reps) - 1)]
        return self._by_id[doc_id]


def _read_ids(workdir: str, s: int) -> list[str]:
    return [str(x) for x in read_table(_ids_path(workdir, s))["id"]]


# --------------------------------------------------------------------------- map units


def map_units(n_shards: int, max_map_tasks: int) -> list[tuple[int, int]]:
    """Split shard indexes ``0..n_shards-1`` into at most ``max_map_tasks`` contiguous runs.

    A map task reads every shard of its run and writes one file per partition, so the
    shuffle has ``units x partitions`` files whatever the number of shards.
    """
    m = max(1, min(n_shards, max_map_tasks))
    return [((u * n_shards) // m, ((u + 1) * n_shards) // m) for u in range(m)]


_ROWS = {
    "exact": (lambda: _exact_rows, lambda: _exact_partition),
    "lines": (lambda: _lines_rows, lambda: _lines_partition),
    "minhash": (lambda: _minhash_rows, lambda: _minhash_partition),
}


def _map_task(
    kind: str, shards: Sequence[StageShard], lo: int, u: int, workdir: str, partitions: int,
    config: Any, fail_at: FailAt,
) -> None:
    """Map one run of shards (indexes ``lo..``): rows of each shard, split into partitions."""
    rows_fn, part_fn = (f() for f in _ROWS[kind])
    tables: list[dict[str, np.ndarray]] = []
    info: dict[str, int] = defaultdict(int)
    outputs: list[Path] = []
    for k, shard in enumerate(shards):
        cols, ids, shard_info = rows_fn(shard, lo + k, config)
        tables.append(cols)
        if kind != "lines":
            outputs.append(_write_ids(workdir, lo + k, ids))
        for key, v in shard_info.items():
            info[key] += v
    names = list(tables[0]) if tables else []
    cols = {n: _concat(tables, n, tables[0][n].dtype) for n in names}
    outputs += _write_partitions(workdir, "map", u, part_fn(cols, partitions), partitions, cols)
    maybe_fail(fail_at, "map", u)
    mark_done(workdir, "map", f"m{u:05d}", outputs, dict(info))


def _run_map(
    workdir: str, kind: str, ordered: Sequence[StageShard], partitions: int, config: Any,
    max_map_tasks: int, fail_at: FailAt,
) -> int:
    units = map_units(len(ordered), max_map_tasks)
    run_phase(workdir, "map", [f"m{u:05d}" for u in range(len(units))], _map_task,
              [(kind, list(ordered[lo:hi]), lo, u, workdir, partitions, config, fail_at)
               for u, (lo, hi) in enumerate(units)])
    return len(units)


def _map_info(workdir: str, n_units: int, key: str) -> int:
    return sum(done_info(workdir, "map", f"m{u:05d}").get(key, 0) for u in range(n_units))


# --------------------------------------------------------------------------- exact


@dataclass
class ExactConfig:
    """Options of the exact-duplicate job."""

    partitions: int = 16
    max_map_tasks: int = 4096


def _exact_rows(shard: StageShard, s: int, config: ExactConfig) -> tuple[dict, list[str], dict]:
    """One shard's exact-dedup rows: 128-bit key and ref of every document."""
    ids: list[str] = []
    hi: list[int] = []
    lo: list[int] = []
    for doc in shard.documents():
        h, lo_ = document_key(doc.text)
        ids.append(doc.id)
        hi.append(h)
        lo.append(lo_)
    n = len(ids)
    cols = {"hi": np.array(hi, dtype=U64), "lo": np.array(lo, dtype=U64),
            "ref": (np.int64(s) << SHIFT) | np.arange(n, dtype=np.int64)}
    return cols, ids, {"docs": n}


def _exact_partition(cols: dict[str, np.ndarray], partitions: int) -> np.ndarray:
    return (cols["hi"] % U64(partitions)).astype(np.int64)


def _exact_reduce(
    workdir: str, p: int, n_shards: int, n_units: int, partitions: int, fail_at: FailAt
) -> None:
    tables = [read_table(_part(workdir, "map", p, u)) for u in range(n_units)]
    hi = _concat(tables, "hi", U64)
    lo = _concat(tables, "lo", U64)
    ref = _concat(tables, "ref", np.int64)
    order = np.lexsort((ref, lo, hi))
    hi, lo, ref = hi[order], lo[order], ref[order]
    first = np.ones(len(ref), dtype=bool)
    first[1:] = (hi[1:] != hi[:-1]) | (lo[1:] != lo[:-1])
    keeper = ref[np.flatnonzero(first)[np.cumsum(first) - 1]] if len(ref) else ref
    dup = ~first
    groups = n_groups(n_shards, partitions)
    outputs = _route(workdir, "reduce", p, {"ref": ref[dup], "keeper": keeper[dup]}, n_shards, groups)
    maybe_fail(fail_at, "reduce", p)
    mark_done(workdir, "reduce", f"p{p:05d}", outputs, {"duplicates": int(dup.sum())})


def prepare_exact(
    shards: Sequence[StageShard], workdir: str, config: ExactConfig, fail_at: FailAt = None
) -> dict[str, Any]:
    """Run the exact-duplicate job over ``shards`` under ``workdir``; return a summary."""
    ordered = sorted_shards(shards)
    S, P = len(ordered), config.partitions
    os.makedirs(workdir, exist_ok=True)
    check_config(workdir, {"job": "exact", "partitions": P, "max_map_tasks": config.max_map_tasks,
                           "shards": [s.shard_id for s in ordered],
                           "files": [list(s.files) for s in ordered]})
    M = _run_map(workdir, "exact", ordered, P, config, config.max_map_tasks, fail_at)
    run_phase(workdir, "reduce", [f"p{p:05d}" for p in range(P)], _exact_reduce,
              [(workdir, p, S, M, P, fail_at) for p in range(P)])
    _run_final(workdir, "reduce", P, S, fail_at)
    summary = {
        "documents": _map_info(workdir, M, "docs"),
        "duplicates": sum(done_info(workdir, "reduce", f"p{p:05d}")["duplicates"] for p in range(P)),
    }
    write_json(Path(workdir) / "summary.json", summary)
    return summary


def load_exact(workdir: str, shard_id: str) -> ShardDecisions:
    """Return, per document id of the shard, the ref of the copy it duplicates (or None)."""
    s = _shard_index(workdir, shard_id)
    dec = read_table(_decision_path(workdir, s))
    values = {int(r) & POS_MASK: int(k) for r, k in zip(dec["ref"], dec["keeper"], strict=True)}
    return ShardDecisions(_read_ids(workdir, s), values, None)


# --------------------------------------------------------------------------- lines


@dataclass
class LinesConfig:
    """Options of the line-frequency job."""

    min_count: int = 2
    partitions: int = 16
    max_map_tasks: int = 4096


def _lines_rows(shard: StageShard, s: int, config: LinesConfig) -> tuple[dict, list[str], dict]:
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


def _lines_partition(cols: dict[str, np.ndarray], partitions: int) -> np.ndarray:
    return ((cols["hash"].view(U64) >> U64(SHIFT)) % U64(partitions)).astype(np.int64)


def _lines_reduce(
    workdir: str, p: int, n_shards: int, n_units: int, partitions: int, min_count: int,
    fail_at: FailAt,
) -> None:
    tables = [read_table(_part(workdir, "map", p, u)) for u in range(n_units)]
    h = _concat(tables, "hash", np.int64)
    c = _concat(tables, "count", np.int64)
    shard = _concat(tables, "shard", np.int64)
    uniq, inverse = np.unique(h, return_inverse=True)
    total = np.bincount(inverse, weights=c, minlength=len(uniq)).astype(np.int64)
    frequent_row = total[inverse] >= min_count
    groups = n_groups(n_shards, partitions)
    cols = {"ref": shard[frequent_row] << SHIFT, "hash": h[frequent_row]}
    outputs = _route(workdir, "reduce", p, cols, n_shards, groups)
    maybe_fail(fail_at, "reduce", p)
    mark_done(workdir, "reduce", f"p{p:05d}", outputs,
              {"frequent_lines": int((total >= min_count).sum()), "distinct_lines": int(len(uniq))})


def prepare_lines(
    shards: Sequence[StageShard], workdir: str, config: LinesConfig, fail_at: FailAt = None
) -> dict[str, Any]:
    """Run the line-frequency job over ``shards`` under ``workdir``; return a summary."""
    ordered = sorted_shards(shards)
    S, P = len(ordered), config.partitions
    os.makedirs(workdir, exist_ok=True)
    check_config(workdir, {"job": "lines", "partitions": P, "min_count": config.min_count,
                           "max_map_tasks": config.max_map_tasks,
                           "shards": [s.shard_id for s in ordered],
                           "files": [list(s.files) for s in ordered]})
    M = _run_map(workdir, "lines", ordered, P, config, config.max_map_tasks, fail_at)
    run_phase(workdir, "reduce", [f"p{p:05d}" for p in range(P)], _lines_reduce,
              [(workdir, p, S, M, P, config.min_count, fail_at) for p in range(P)])
    _run_final(workdir, "reduce", P, S, fail_at)
    red = [done_info(workdir, "reduce", f"p{p:05d}") for p in range(P)]
    summary = {
        "documents": _map_info(workdir, M, "docs"),
        "lines": _map_info(workdir, M, "lines"),
        "distinct_lines": sum(r["distinct_lines"] for r in red),
        "frequent_lines": sum(r["frequent_lines"] for r in red),
    }
    write_json(Path(workdir) / "summary.json", summary)
    return summary


def load_lines(workdir: str, shard_id: str) -> frozenset[int]:
    """Return the hashes of the shard's lines that are frequent across the corpus."""
    s = _shard_index(workdir, shard_id)
    return frozenset(read_table(_decision_path(workdir, s))["hash"].tolist())


# --------------------------------------------------------------------------- minhash


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


def _minhash_rows(shard: StageShard, s: int, config: MinHashConfig) -> tuple[dict, list[str], dict]:
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


def _minhash_partition(cols: dict[str, np.ndarray], partitions: int) -> np.ndarray:
    return ((cols["key"] >> U64(SHIFT)) % U64(partitions)).astype(np.int64)


def _edges_path(workdir: str, p: int) -> Path:
    return Path(workdir) / "candidates" / f"p{p:05d}.parquet"


def _minhash_candidates(
    workdir: str, p: int, n_shards: int, n_units: int, config: MinHashConfig, fail_at: FailAt
) -> None:
    tables = [read_table(_part(workdir, "map", p, u)) for u in range(n_units)]
    edges = bucket_edges(_concat(tables, "band", np.int64), _concat(tables, "key", U64),
                         _concat(tables, "ref", np.int64))
    outputs = []
    if config.verify == "none":
        path = _edges_path(workdir, p)
        write_table(path, {"a": edges[:, 0], "b": edges[:, 1]})
        outputs.append(path)
    else:
        groups = n_groups(n_shards, config.partitions)
        outputs += _route(workdir, "candidates", p, {"ref": edges[:, 0], "b": edges[:, 1]},
                          n_shards, groups)
    maybe_fail(fail_at, "candidates", p)
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
    fail_at: FailAt,
) -> None:
    """Attach the payload of each edge's first endpoint (in group ``g``); route by the second."""
    tables = [read_table(_routed(workdir, "candidates", p, g)) for p in range(config.partitions)]
    # one pair can come from several bands and partitions: verify it once
    pairs = unique_pairs(np.stack([_concat(tables, "ref", np.int64), _concat(tables, "b", np.int64)],
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
        path = Path(workdir) / "verify1" / f"g{g:05d}" / f"h{h:05d}.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        table = pa.table({
            "a": pa.array(a[sel]), "b": pa.array(b[sel]),
            "payload": _list_column([payload[int(x)] for x in a[sel]], dtype),
        })
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        pq.write_table(table, tmp, compression="zstd")
        os.replace(tmp, path)
        outputs.append(path)
    maybe_fail(fail_at, "verify1", g)
    mark_done(workdir, "verify1", f"g{g:05d}", outputs)


def _verify2(
    workdir: str, h: int, shards: Sequence[StageShard], n_shards: int, config: MinHashConfig,
    fail_at: FailAt,
) -> None:
    """Attach the second endpoint's payload (in group ``h``) and keep similar pairs."""
    groups = n_groups(n_shards, config.partitions)
    a_parts, b_parts, pay_parts = [], [], []
    for g in range(groups):
        path = Path(workdir) / "verify1" / f"g{g:05d}" / f"h{h:05d}.parquet"
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
    path = Path(workdir) / "verify2" / f"h{h:05d}.parquet"
    write_table(path, {"a": a[keep], "b": b[keep], "similarity": sims[keep]})
    maybe_fail(fail_at, "verify2", h)
    mark_done(workdir, "verify2", f"h{h:05d}", [path],
              {"checked": int(len(a)), "accepted": int(keep.sum())})


def _minhash_components(workdir: str, n_shards: int, config: MinHashConfig, fail_at: FailAt) -> None:
    """Union-find over the accepted edges; route (ref, cluster, size) to shard groups."""
    if config.verify == "none":
        files = [_edges_path(workdir, p) for p in range(config.partitions)]
    else:
        groups = n_groups(n_shards, config.partitions)
        files = [Path(workdir) / "verify2" / f"h{h:05d}.parquet" for h in range(groups)]
    tables = [read_table(f) for f in files]
    edges = unique_pairs(np.stack([_concat(tables, "a", np.int64), _concat(tables, "b", np.int64)],
                                  axis=1))
    refs, roots, sizes = components_of_refs(edges[:, 0], edges[:, 1])
    outputs = _route(workdir, "components", 0,
                     {"ref": refs, "cluster": roots, "size": sizes.astype(np.int64)},
                     n_shards, n_groups(n_shards, config.partitions))
    maybe_fail(fail_at, "components", 0)
    mark_done(workdir, "components", "all", outputs, {
        "edges": int(len(edges)),
        "clusters": int(len(np.unique(roots))),
        "documents_in_clusters": int(len(refs)),
        "removed": int((refs != roots).sum()),
    })


def prepare_minhash(
    shards: Sequence[StageShard], workdir: str, config: MinHashConfig, fail_at: FailAt = None
) -> dict[str, Any]:
    """Run the MinHash-LSH job over ``shards`` under ``workdir``; return a summary."""
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
    M = _run_map(workdir, "minhash", ordered, P, config, config.max_map_tasks, fail_at)
    run_phase(workdir, "candidates", [f"p{p:05d}" for p in range(P)], _minhash_candidates,
              [(workdir, p, S, M, config, fail_at) for p in range(P)])
    groups = n_groups(S, P)
    if config.verify != "none":
        run_phase(workdir, "verify1", [f"g{g:05d}" for g in range(groups)], _verify1,
                  [(workdir, g, ordered, S, config, fail_at) for g in range(groups)])
        run_phase(workdir, "verify2", [f"h{h:05d}" for h in range(groups)], _verify2,
                  [(workdir, h, ordered, S, config, fail_at) for h in range(groups)])
    run_phase(workdir, "components", ["all"], _minhash_components,
              [(workdir, S, config, fail_at)])
    _run_final_components(workdir, S, P, fail_at)
    comp = done_info(workdir, "components", "all")
    summary = {
        "documents": _map_info(workdir, M, "docs"),
        "bucket_rows": _map_info(workdir, M, "rows"),
        "candidate_edges": sum(done_info(workdir, "candidates", f"p{p:05d}")["edges"]
                               for p in range(P)),
        **comp,
    }
    if config.verify != "none":
        summary["verified_edges"] = sum(done_info(workdir, "verify2", f"h{h:05d}")["accepted"]
                                        for h in range(groups))
    write_json(Path(workdir) / "summary.json", summary)
    return summary


def _run_final_components(workdir: str, S: int, P: int, fail_at: FailAt) -> None:
    """Per-shard decision files from the components task (its output is one "partition")."""
    groups = n_groups(S, P)
    units = [f"g{g:05d}" for g in range(groups)]
    args = [(workdir, "components", g, 1, S, groups, fail_at) for g in range(groups)]
    run_phase(workdir, "final", units, _finalize_group, args)


def load_minhash(workdir: str, shard_id: str) -> ShardDecisions:
    """Return, per document id of the shard, ``(cluster ref, cluster size, own ref)``."""
    s = _shard_index(workdir, shard_id)
    dec = read_table(_decision_path(workdir, s))
    values: dict[int, Any] = {
        int(r) & POS_MASK: (int(c), int(z), int(r))
        for r, c, z in zip(dec["ref"], dec["cluster"], dec["size"], strict=True)
    }
    base = s << SHIFT
    return ShardDecisions(_read_ids(workdir, s), values,
                          default=lambda pos: (base | pos, 1, base | pos))


def is_prepared(workdir: str) -> bool:
    """True when every final unit of the job in ``workdir`` is done."""
    cfg = load_config(workdir)
    groups = n_groups(len(cfg["shards"]), cfg["partitions"])
    return all(is_done(workdir, "final", f"g{g:05d}") for g in range(groups))


def list_phase_files(workdir: str, phase: str) -> list[str]:
    """Return the data files a phase wrote (for tests and inspection)."""
    return sorted(glob.glob(os.path.join(workdir, phase, "**", "*.parquet"), recursive=True))
