"""The evaluation n-gram index of ``decontaminate_v1``: ``ngrams`` -> ``index``.

``ngrams`` (task per evaluation file, or per split of a large JSONL/Parquet file): read the
file through :mod:`pipeline.io.readers`, hash every ``n``-word window of each document
(:func:`pipeline.text.decontamination.ngram_hashes`), and write the distinct hashes,
sorted, with the evaluation set's id, as ``.npy`` files. ``index`` (task per hash range):
gather the range from every ``ngrams`` file (two binary searches on a memory map), keep
each hash once with the lowest set id, and write ``index/pNNNNN.hashes.npy`` and
``.sets.npy``. The number of ranges is decided after ``ngrams`` counted the hashes: as
few as keep each partition within ``max_partition_bytes`` (10 bytes per n-gram), so a
shard task memory-maps the index instead of loading it, and no task holds more than one
partition.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.core.step import StepStats
from pipeline.dedup.phases.memory import log_phase, task_memory
from pipeline.dedup.phases.store import (
    check_config,
    done_info,
    load_config,
    mark_done,
    run_phase,
    write_json,
)
from pipeline.dedup.text import U64, ShingleHasher
from pipeline.execution import faults
from pipeline.execution.executor import Executor, Resources
from pipeline.io.atomic import atomic_path
from pipeline.text.decontamination import (
    DEFAULT_NGRAM,
    NgramIndex,
    ngram_hashes,
    partition_bounds,
    sorted_unique,
    unique_first_set,
)

BYTES_PER_NGRAM = 10  # uint64 hash + uint16 set id
BATCH_DOCS = 256


@dataclass
class IndexConfig:
    """Options of the index build: evaluation sets (paths or globs), n, read field, size."""

    evals: list[str] = field(default_factory=list)
    ngram: int = DEFAULT_NGRAM
    text_field: str = "text"
    max_partition_bytes: int = 256 << 20


def eval_files(evals: Sequence[str]) -> list[tuple[int, str]]:
    """Return (set id, file) for every file each ``evals`` entry (path or glob) names.

    Raises ValueError naming an entry that matches no file.
    """
    from pipeline.core.config import JobConfigError, expand_inputs

    out = []
    for i, pattern in enumerate(evals):
        try:
            files = expand_inputs([pattern])
        except JobConfigError:
            raise ValueError(f"evals[{i}]: {pattern!r} matches no file; give JSONL or Parquet "
                             "evaluation files (paths or globs)") from None
        out += [(i, f) for f in files]
    return out


def _save_npy(path: Path, array: np.ndarray) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.save(f, array)


def _ngram_path(workdir: str, u: int, column: str) -> Path:
    return Path(workdir) / "ngrams" / f"u{u:05d}.{column}.npy"


def index_path(workdir: str, p: int, column: str) -> Path:
    """Return the file of column ``hashes`` or ``sets`` of index partition ``p``."""
    return Path(workdir) / "index" / f"p{p:05d}.{column}.npy"


def _ngrams(workdir: str, u: int, set_id: int, path: str, split: int, n_splits: int,
            ngram: int, text_field: str) -> None:
    """Hash the n-grams of one evaluation file (split); write them distinct and sorted."""
    from pipeline.io.readers import ReadOptions, read_shard, resolve_format

    options = ReadOptions(text_field=text_field, html_only=False)
    stats = StepStats()
    hasher = ShingleHasher(ngram)
    parts: list[np.ndarray] = []
    batch: list[str] = []
    docs = short = 0

    def flush() -> None:
        nonlocal short
        hashes, counts = ngram_hashes(batch, hasher, skip_numeric=True)
        short += int((counts == 0).sum())
        parts.append(sorted_unique(hashes))
        batch.clear()

    for doc in read_shard(path, resolve_format(path, options), split, n_splits, options, stats):
        docs += 1
        batch.append(doc.text)
        if len(batch) >= BATCH_DOCS:
            flush()
    if batch:
        flush()
    if docs == 0:
        errors = {k: v for k, v in stats.counters.items() if k.startswith(("error:", "skipped:"))}
        raise ValueError(f"evaluation file {path} (split {split}) has no documents "
                         f"({errors or 'empty'}); check the file and text_field {text_field!r}")
    hashes = sorted_unique(np.concatenate(parts)) if parts else np.zeros(0, dtype=U64)
    outputs = [_ngram_path(workdir, u, "hashes"), _ngram_path(workdir, u, "sets")]
    _save_npy(outputs[0], hashes)
    _save_npy(outputs[1], np.full(len(hashes), set_id, dtype=np.uint16))
    faults.checkpoint("ngrams", u)
    mark_done(workdir, "ngrams", f"u{u:05d}", outputs,
              {"docs": docs, "short_docs": short, "ngrams": int(len(hashes)),
               "set": set_id, "errors": sum(v for k, v in stats.counters.items()
                                            if k.startswith("error:"))})


def _index(workdir: str, p: int, partitions: int, n_units: int) -> None:
    """Merge hash range ``p`` of every ``ngrams`` file into index partition ``p``."""
    bounds = [U64(0), *partition_bounds(partitions)]
    hs, ss = [], []
    for u in range(n_units):
        h = np.load(_ngram_path(workdir, u, "hashes"), mmap_mode="r")
        a = int(np.searchsorted(h, bounds[p])) if p else 0
        b = int(np.searchsorted(h, bounds[p + 1])) if p + 1 < partitions else len(h)
        hs.append(np.asarray(h[a:b]))
        ss.append(np.asarray(np.load(_ngram_path(workdir, u, "sets"), mmap_mode="r")[a:b]))
    h, s = unique_first_set(np.concatenate(hs).astype(U64), np.concatenate(ss).astype(np.uint16))
    outputs = [index_path(workdir, p, "hashes"), index_path(workdir, p, "sets")]
    _save_npy(outputs[0], h)
    _save_npy(outputs[1], s)
    faults.checkpoint("index", p)
    mark_done(workdir, "index", f"p{p:05d}", outputs, {"ngrams": int(len(h))})


def prepare_index(workdir: str, config: IndexConfig, executor: Executor) -> dict[str, Any]:
    """Build the n-gram index of ``config.evals`` under ``workdir``; return a summary.

    Both phases fan out through ``executor``; finished units of an earlier run are reused.
    The summary (also ``summary.json``) counts each set's documents, those shorter than
    ``ngram`` words (they cannot be matched), and the distinct n-grams indexed.
    """
    from pipeline.io.readers import ReadOptions, plan_splits, resolve_format

    files = eval_files(config.evals)
    options = ReadOptions(text_field=config.text_field, html_only=False)
    units = [(i, f, k, n) for i, f in files
             for n in [plan_splits(f, resolve_format(f, options), options)] for k in range(n)]
    os.makedirs(workdir, exist_ok=True)
    check_config(workdir, {"job": "decontaminate", "evals": list(config.evals),
                           "ngram": config.ngram, "text_field": config.text_field,
                           "max_partition_bytes": config.max_partition_bytes,
                           "files": [[f, os.path.getsize(f)] for _, f in files]})
    U = len(units)
    # a split of an evaluation file, read in batches of BATCH_DOCS: its share of the file
    declared = task_memory(max((os.path.getsize(f) // n for _, f, _, n in units), default=0),
                           "map.input_byte")
    run_phase(workdir, "ngrams", [f"u{u:05d}" for u in range(U)], _ngrams,
              [(workdir, u, i, f, k, n, config.ngram, config.text_field)
               for u, (i, f, k, n) in enumerate(units)], executor, Resources(memory=declared))
    log_phase(workdir, "ngrams", U, declared)
    info = [done_info(workdir, "ngrams", f"u{u:05d}") for u in range(U)]
    total = sum(i["ngrams"] for i in info)
    P = max(1, math.ceil(total * BYTES_PER_NGRAM / config.max_partition_bytes))
    declared = task_memory(-(-total // P), "decontaminate.index")
    run_phase(workdir, "index", [f"p{p:05d}" for p in range(P)], _index,
              [(workdir, p, P, U) for p in range(P)], executor, Resources(memory=declared))
    log_phase(workdir, "index", P, declared, ngrams=total)
    sets: dict[str, dict[str, int]] = {}
    for i in info:
        entry = sets.setdefault(config.evals[i["set"]], {"documents": 0, "short_documents": 0,
                                                         "errors": 0})
        entry["documents"] += i["docs"]
        entry["short_documents"] += i["short_docs"]
        entry["errors"] += i["errors"]
    summary = {"ngram": config.ngram, "partitions": P, "eval_sets": sets,
               "ngrams": sum(done_info(workdir, "index", f"p{p:05d}")["ngrams"] for p in range(P))}
    write_json(Path(workdir) / "summary.json", summary)
    return summary


def load_index(workdir: str) -> tuple[NgramIndex, list[str]]:
    """Memory-map the index built under ``workdir``; return it and the evaluation set names."""
    config = load_config(workdir)
    with open(Path(workdir) / "summary.json", encoding="utf-8") as f:
        partitions = json.load(f)["partitions"]
    hashes = [np.load(index_path(workdir, p, "hashes"), mmap_mode="r") for p in range(partitions)]
    sets = [np.load(index_path(workdir, p, "sets"), mmap_mode="r") for p in range(partitions)]
    return NgramIndex(hashes, sets), list(config["evals"])
