"""Bloom-filter exact-duplicate job: ``map`` -> ``filter`` -> ``final``, one pass over the keys.

``map`` (task per run of shards): the 128-bit key of each document (or of each non-blank
paragraph) of the normalised text (:func:`pipeline.dedup.text.document_key`), with its ref
(``shard << 32 | position``) and paragraph index, sorted by the key's first 64-bit half and
written as ``.npy`` columns; the first half's range then selects a partition with two
binary searches on a memory map. The keys are written sorted rather than split into one
file per partition because the partition count is only known once ``map`` has counted the
keys (it depends on them when ``expected_items`` is not given).

Sizing (:func:`pipeline.dedup.bloom.bloom_size`): ``m = ceil(-n ln p / (ln 2)^2)`` bits
and ``k = round((m / n) ln 2)`` hashes for ``n`` items (``expected_items``, else the
number of keys ``map`` hashed, which bounds the distinct ones) at false-positive rate
``p``. The key space is cut into ``P = ceil(m / 8 / max_filter_bytes)`` equal ranges of the
first half, so each ``filter`` task holds one filter of ``m / P`` bits.

``filter`` (task per partition): streams its key range from every map unit in (shard,
position, paragraph) order through one Bloom filter, test-and-set; a key whose bits were
all set is a duplicate (of an earlier key, or a false positive at rate about ``p``), so the
first occurrence in that order survives, as in ``dedup_exact_v1``. The duplicates are
routed to shard groups. ``final``: one decision file per shard.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.core.step import StageShard
from pipeline.dedup.bloom import BloomFilter, bloom_size, expected_fp_rate
from pipeline.dedup.phases.memory import log_phase, task_memory
from pipeline.dedup.phases.partfile import SHUFFLE_FORMAT
from pipeline.dedup.phases.shuffle import (
    POS_MASK,
    SHIFT,
    ShardDecisions,
    ids_path,
    map_memory,
    map_units,
    n_groups,
    read_decisions,
    read_ids,
    route,
    run_final,
    shard_bytes,
    shard_index,
    sorted_shards,
)
from pipeline.dedup.phases.store import (
    check_config,
    done_info,
    mark_done,
    run_phase,
    write_json,
    write_table,
)
from pipeline.dedup.text import U64, document_key
from pipeline.execution import faults
from pipeline.execution.executor import Executor, Resources
from pipeline.io.atomic import atomic_path

MODES = ("document", "paragraph")
_COLUMNS = (("h1", U64), ("h2", U64), ("ref", np.int64), ("para", np.int32))


@dataclass
class BloomConfig:
    """Options of the Bloom-filter job (see the module docstring)."""

    mode: str = "document"
    fp_rate: float = 1e-6
    expected_items: int | None = None
    max_filter_bytes: int = 1 << 30
    max_map_tasks: int = 4096


def paragraphs(text: str) -> list[str]:
    """Return the paragraphs of ``text`` as paragraph mode sees them: its lines (dolma's split)."""
    return text.split("\n")


def paragraph_keys(text: str) -> tuple[list[int], list[tuple[int, int]]]:
    """Return (index, 128-bit key) of each paragraph that is not blank once normalised."""
    idx, keys = [], []
    for i, para in enumerate(paragraphs(text)):
        if para.strip():
            idx.append(i)
            keys.append(document_key(para))
    return idx, keys


def plan_partitions(n_items: int, config: BloomConfig) -> tuple[int, int, int]:
    """Return (partitions, bits per partition, hashes) for ``n_items`` keys under ``config``.

    The total ``m`` and ``k`` are :func:`~pipeline.dedup.bloom.bloom_size`'s; partitions
    are as few as keep each filter within ``max_filter_bytes``.
    """
    size = bloom_size(config.expected_items or n_items, config.fp_rate)
    parts = max(1, math.ceil(size.bytes / config.max_filter_bytes))
    while math.ceil(size.bits / parts / 64) * 8 > config.max_filter_bytes:
        parts += 1
    return parts, math.ceil(size.bits / parts / 64) * 64, size.hashes


def _key_path(workdir: str, u: int, column: str) -> Path:
    return Path(workdir) / "map" / f"m{u:05d}.{column}.npy"


def _save_npy(path: Path, array: np.ndarray) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.save(f, array)


def _map(shards: Sequence[StageShard], lo: int, u: int, workdir: str, mode: str) -> None:
    """Hash one run of shards (indexes ``lo..``); write its keys sorted by ``h1`` and its ids."""
    h1: list[int] = []
    h2: list[int] = []
    refs: list[int] = []
    paras: list[int] = []
    outputs: list[Path] = []
    docs = 0
    for k, shard in enumerate(shards):
        s = lo + k
        ids: list[str] = []
        for pos, doc in enumerate(shard.documents()):
            ids.append(doc.id)
            if mode == "document":
                idx, keys = [0], [document_key(doc.text)]
            else:
                idx, keys = paragraph_keys(doc.text)
            ref = (s << SHIFT) | pos
            for i, (a, b) in zip(idx, keys, strict=True):
                h1.append(a)
                h2.append(b)
                refs.append(ref)
                paras.append(i)
        docs += len(ids)
        path = ids_path(workdir, s)
        write_table(path, {"id": np.array(ids, dtype=object)})
        outputs.append(path)
    cols = {"h1": np.array(h1, dtype=U64), "h2": np.array(h2, dtype=U64),
            "ref": np.array(refs, dtype=np.int64), "para": np.array(paras, dtype=np.int32)}
    order = np.argsort(cols["h1"], kind="stable")
    for name, _ in _COLUMNS:
        path = _key_path(workdir, u, name)
        _save_npy(path, cols[name][order])
        outputs.append(path)
    faults.checkpoint("map", u)
    mark_done(workdir, "map", f"m{u:05d}", outputs, {"docs": docs, "keys": len(h1)})


def _bounds(p: int, partitions: int) -> tuple[int, int | None]:
    """Return the range ``[lo, hi)`` of first halves that partition ``p`` owns (hi None = 2**64)."""
    hi = ((p + 1) << 64) // partitions if p + 1 < partitions else None
    return (p << 64) // partitions, hi


def _filter(workdir: str, p: int, partitions: int, bits: int, hashes: int, n_units: int,
            n_shards: int) -> None:
    """Stream partition ``p``'s keys through one Bloom filter; route the duplicates."""
    bloom = BloomFilter(bits, hashes)
    lo, hi = _bounds(p, partitions)
    dup_ref: list[np.ndarray] = []
    dup_para: list[np.ndarray] = []
    keys = 0
    for u in range(n_units):  # map units cover runs of shards in shard order
        h1 = np.load(_key_path(workdir, u, "h1"), mmap_mode="r")
        a = int(np.searchsorted(h1, U64(lo)))
        b = len(h1) if hi is None else int(np.searchsorted(h1, U64(hi)))
        if a == b:
            continue
        cols = {name: np.load(_key_path(workdir, u, name), mmap_mode="r")[a:b]
                for name, _ in _COLUMNS}
        order = np.lexsort((cols["para"], cols["ref"]))  # (shard, position, paragraph)
        seen = bloom.test_and_set(np.asarray(cols["h1"])[order], np.asarray(cols["h2"])[order])
        dup_ref.append(np.asarray(cols["ref"])[order][seen])
        dup_para.append(np.asarray(cols["para"])[order][seen])
        keys += b - a
    ref = np.concatenate(dup_ref) if dup_ref else np.zeros(0, dtype=np.int64)
    para = np.concatenate(dup_para) if dup_para else np.zeros(0, dtype=np.int32)
    outputs = route(workdir, "filter", p, {"ref": ref, "para": para}, n_shards,
                    n_groups(n_shards, partitions))
    fill = float(np.unpackbits(bloom.words.view(np.uint8)).sum()) / bits
    faults.checkpoint("filter", p)
    mark_done(workdir, "filter", f"p{p:05d}", outputs,
              {"keys": keys, "duplicates": int(len(ref)), "fill": fill})


def prepare_bloom(
    shards: Sequence[StageShard], workdir: str, config: BloomConfig, executor: Executor
) -> dict[str, Any]:
    """Run the Bloom-filter job over ``shards`` under ``workdir``; return a summary.

    The summary gives the sizing (``items``, ``bits``, ``hashes``, ``partitions``,
    ``filter_bytes`` per task), ``keys``, ``duplicates`` and the false-positive rates:
    ``fp_rate_expected`` from the formula for the keys inserted, ``fp_rate_from_fill``
    from the measured fraction of set bits (``fill ** k``, averaged over partitions).
    Every phase fans out through ``executor``; finished units of an earlier run are reused.
    """
    if config.mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {config.mode!r}")
    ordered = sorted_shards(shards)
    S = len(ordered)
    os.makedirs(workdir, exist_ok=True)
    check_config(workdir, {"job": "bloom", "shuffle_format": SHUFFLE_FORMAT,
                           "mode": config.mode, "fp_rate": config.fp_rate,
                           "expected_items": config.expected_items,
                           "max_filter_bytes": config.max_filter_bytes,
                           "max_map_tasks": config.max_map_tasks,
                           "shards": [s.shard_id for s in ordered],
                           "files": [list(s.files) for s in ordered]})
    units = map_units(S, config.max_map_tasks)
    M = len(units)
    declared = map_memory(shard_bytes(ordered), units)
    run_phase(workdir, "map", [f"m{u:05d}" for u in range(M)], _map,
              [(ordered[lo:hi], lo, u, workdir, config.mode) for u, (lo, hi) in enumerate(units)],
              executor, Resources(memory=declared))
    log_phase(workdir, "map", M, declared, shards=S)
    keys = sum(done_info(workdir, "map", f"m{u:05d}")["keys"] for u in range(M))
    P, bits, hashes = plan_partitions(keys, config)
    # the filter, plus one map unit's slice of the partition's keys at a time
    declared = task_memory(-(-keys // (P * M)), "bloom.filter_key") + bits // 8
    run_phase(workdir, "filter", [f"p{p:05d}" for p in range(P)], _filter,
              [(workdir, p, P, bits, hashes, M, S) for p in range(P)], executor,
              Resources(memory=declared))
    log_phase(workdir, "filter", P, declared, filter_bytes=bits // 8)
    run_final(workdir, "filter", P, S, n_groups(S, P), executor)
    info = [done_info(workdir, "filter", f"p{p:05d}") for p in range(P)]
    inserted = keys - sum(i["duplicates"] for i in info)
    summary = {
        "mode": config.mode,
        "documents": sum(done_info(workdir, "map", f"m{u:05d}")["docs"] for u in range(M)),
        "keys": keys,
        "duplicates": sum(i["duplicates"] for i in info),
        "items": config.expected_items or keys,
        "partitions": P,
        "bits": bits * P,
        "hashes": hashes,
        "filter_bytes": bits // 8,
        "fp_rate_target": config.fp_rate,
        "fp_rate_expected": expected_fp_rate(inserted, bits * P, hashes),
        "fp_rate_from_fill": float(np.mean([i["fill"] ** hashes for i in info])),
    }
    write_json(Path(workdir) / "summary.json", summary)
    return summary


def load_bloom(workdir: str, shard_id: str) -> ShardDecisions:
    """Return, per document id of the shard, its duplicate paragraph indexes (sorted list),
    ``[0]`` for a duplicate document in document mode, or None when nothing repeats."""
    s = shard_index(workdir, shard_id)
    dec = read_decisions(workdir, s)
    values: dict[int, list[int]] = {}
    for r, para in zip(dec["ref"].tolist(), dec["para"].tolist(), strict=True):
        values.setdefault(int(r) & POS_MASK, []).append(int(para))
    return ShardDecisions(read_ids(workdir, s), {k: sorted(v) for k, v in values.items()}, None)
