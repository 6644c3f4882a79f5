"""What memory each dedup task needs, and partition plans that keep it under the per-task cap.

Every phase declares, for its tasks, ``BASE_BYTES + rows x bytes_per_row`` (the executor
passes it to Ray as the task's ``memory`` resource, so a node never runs more tasks than
fit). The rows are known before the phase runs: the previous phase recorded them
(``bucket_rows``, rows written per partition, in the map markers; the row offsets of the
routed and edge files (:mod:`~pipeline.dedup.phases.partfile`) for the final and components
phases; the candidate pairs per group for verify; the stage's Parquet bytes for map). When a shuffle partition would need more than the cap
(``task_memory_gb`` of the dedup steps), its reduce splits it into more tasks instead of
failing (:func:`splits`), and the components rounds use more edge partitions
(:func:`partitions_for`); decisions do not depend on the split, since every row with the
same key still meets in one task. A cap below what one task needs for a single row cannot
be met by splitting and raises :class:`TaskMemoryError` naming the option to raise.

Phases whose unit is fixed by something else (a map task's shard, a verify or final
task's shard group, the components partition holding a big star) declare what they need
even above the cap: Ray then runs them only on a node with that much memory free.

The constants were measured on webmix (``benchmarks/dedup_task_memory.py measure``,
2-core VM, 2026-11-27): ``BASE_BYTES`` from the resident size of a Ray worker that imported
the dedup modules; each ``BYTES_PER_ROW`` from the peak of the allocations
:mod:`tracemalloc` saw in one task (numpy arrays included) divided by its rows.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

log = logging.getLogger("pipeline.dedup")

GB = 1 << 30
#: default ``task_memory_gb``: today's webmix jobs stay at their configured partitions
DEFAULT_TASK_MEMORY_GB = 4.0
#: the option's description in the steps' Options
TASK_MEMORY_HELP = ("memory cap per task in GB (worker included): a shuffle partition that "
                    "would need more is split into more tasks; Ray runs a task only where its "
                    "declared memory fits")

#: resident size of a dedup worker before it reads rows. A fresh Ray worker that imported
#: the dedup modules measured 130 MiB; workers that ran earlier tasks keep more (cached
#: MinHash buffers, imported readers) even after freed memory is handed back: the
#: smallest dedup tasks on webmix peaked at 176 to 281 MB resident (``compare``), hence
#: 400 MiB. Map tasks on webmix's 7.5 MB shards peaked at 382 to 503 MB (declared 570).
BASE_BYTES = 400 << 20

#: bytes per row of each task kind: the measured peak of traced allocations per row
#: (webmix, one partition holding every row) times about 1.5, because Arrow's buffers
#: (read_table) are allocated outside tracemalloc's view; the measured figure is in brackets
BYTES_PER_ROW: dict[str, int] = {
    # exact reduce: (hi, lo, ref) rows read, lexsorted and routed [80.8]
    "exact.reduce": 128,
    # lines reduce: (hash, count, shard) rows, np.unique with inverse, routed [71.5]
    "lines.reduce": 128,
    # minhash candidates: (band, key, ref) rows grouped into star edges [87.3]
    "minhash.candidates": 128,
    # components rounds: one directed edge row (u, v) read, de-duplicated, star op,
    # scattered (random graph of 400k nodes, 800k edges) [81.0]
    "components": 128,
    # final: per byte of one shard group's routed rows (rows x row width, as the partitioned
    # files hold them uncompressed) [8.4 exact, 3.5 lines; 7.0 and 6.1 per zstd Parquet byte
    # before the shuffle wrote partitioned files]
    "final.routed_byte": 12,
    # verify1/verify2: one candidate pair of the group with the shingle set of an end (exact
    # verification; webmix payloads are whole HTML pages, extracted text needs less)
    # [41,537 verify1, 109,352 verify2]
    "minhash.verify": 160 << 10,
    # map tasks: per byte of the stage's Parquet input (documents decoded to text, their
    # rows) [12.9 exact, 9.8 lines, 11.0 minhash: the largest shard's figure]
    "map.input_byte": 20,
    # bloom filter: one key (h1, h2, ref, para) of a map unit's slice, lexsorted and tested
    # (estimated from the columns' 28 bytes and two sorted copies, not measured)
    "bloom.filter_key": 128,
    # decontaminate index: one n-gram (uint64 hash, uint16 set) gathered and made unique
    # (estimated from the 10 stored bytes and three copies, not measured)
    "decontaminate.index": 40,
}


class TaskMemoryError(ValueError):
    """The per-task memory cap is below what one task needs even for a single row."""


def cap_bytes(task_memory_gb: float) -> int:
    """Return the cap in bytes for a ``task_memory_gb`` option value."""
    return int(task_memory_gb * GB)


def task_memory(rows: int, kind: str) -> int:
    """Return the bytes a task of ``kind`` declares for ``rows`` rows."""
    return BASE_BYTES + math.ceil(max(rows, 0) * BYTES_PER_ROW[kind])


def rows_per_task(cap: int, kind: str, option: str) -> int:
    """Return how many rows of ``kind`` one task may hold under ``cap`` bytes (at least one).

    Raises :class:`TaskMemoryError` naming ``option`` when not even one row fits.
    """
    room = cap - BASE_BYTES
    per_row = BYTES_PER_ROW[kind]
    if room < per_row:
        need = (BASE_BYTES + per_row) / GB
        raise TaskMemoryError(
            f"{option} = {cap / GB:.4g} GB is below what one {kind} task needs for a single row "
            f"({BASE_BYTES >> 20} MB for the worker + {per_row} bytes per row = {need:.4g} GB); "
            f"raise {option}")
    return room // per_row


def splits(rows: Sequence[int], cap: int, kind: str, option: str) -> list[int]:
    """Return into how many tasks to split each partition so that each task fits ``cap``.

    ``rows[p]`` is the number of rows partition ``p`` holds. A partition is split into
    ``ceil(rows / rows_per_task)`` tasks (at least 1).
    """
    per_task = rows_per_task(cap, kind, option)
    return [max(1, -(-int(r) // per_task)) for r in rows]


def partitions_for(rows: int, minimum: int, cap: int, kind: str, option: str) -> int:
    """Return the number of equal hash partitions of ``rows`` rows: at least ``minimum``,
    and as many as keep ``rows / partitions`` within ``cap``."""
    return max(minimum, -(-int(rows) // rows_per_task(cap, kind, option)))


def log_phase(workdir: str | os.PathLike, phase: str, units: int, declared: int,
              **plan: Any) -> dict[str, Any]:
    """Log and record (``<phase>/_memory.json``) a phase's plan and its largest task.

    ``declared`` is the memory each of its ``units`` tasks declared; ``plan`` holds the
    figures the plan was made from (rows, partitions before splitting). The largest task's
    measured peak resident size comes from the phase's ``_stats.json`` (written by
    :func:`~pipeline.dedup.phases.store.run_phase`; absent when every unit was done before).
    """
    phase_dir = Path(workdir) / phase
    try:
        with open(phase_dir / "_stats.json", encoding="utf-8") as f:
            peak = int(json.load(f).get("max_task_rss", 0))
    except (OSError, ValueError):
        peak = 0
    record = {"units": units, "declared_bytes": int(declared), "max_task_rss": peak, **plan}
    phase_dir.mkdir(parents=True, exist_ok=True)
    from pipeline.dedup.phases.store import write_json  # store imports the executor

    write_json(phase_dir / "_memory.json", record)
    log.info("dedup %s: %d task(s), %.0f MB declared per task, largest task's peak RSS %s%s",
             phase, units, declared / 1e6, f"{peak / 1e6:.0f} MB" if peak else "not measured",
             "".join(f", {k} {v}" for k, v in plan.items()))
    return record
