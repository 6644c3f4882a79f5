"""Resumable on-disk units: the files, markers and configuration record of a dedup job.

Every phase of a job is a set of units (a shard, a partition, a group of shards). A
unit's task writes its output files atomically (:mod:`pipeline.io.atomic`) and then a
marker ``<phase>/_done/<unit>.json`` that lists each output file with its size. A rerun
skips a unit only when its marker exists and every listed file is still there with that
size, so a crash between outputs and marker, a deleted output or a truncated one all make
the unit run again. Units are deterministic, so redoing one reproduces the same bytes and
later phases stay valid.
"""

from __future__ import annotations

import ctypes
import glob
import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.execution.executor import Executor, Resources
from pipeline.io.atomic import atomic_path, atomic_write_json

log = logging.getLogger("pipeline.dedup")


def write_table(path: str | os.PathLike, columns: dict[str, np.ndarray | list]) -> int:
    """Write ``columns`` as a zstd Parquet file atomically; return its size in bytes."""
    write_arrow(path, pa.table({k: pa.array(v) for k, v in columns.items()}))
    return Path(path).stat().st_size


def write_arrow(path: str | os.PathLike, table: pa.Table) -> None:
    """Write an Arrow table as a zstd Parquet file atomically."""
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd")


def read_table(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read a file written by :func:`write_table` back into numpy columns."""
    table = pq.read_table(path)
    out: dict[str, np.ndarray] = {}
    for name in table.column_names:
        col = table.column(name)
        if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
            out[name] = np.array(col.to_pylist(), dtype=object)
        elif pa.types.is_list(col.type) or pa.types.is_large_list(col.type):
            out[name] = np.array(col.to_pylist(), dtype=object)
        else:
            out[name] = col.to_numpy()
    return out


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as JSON (indent 1, sorted keys) atomically and durably."""
    atomic_write_json(obj, path, indent=1, sort_keys=True)


def marker_path(workdir: str | os.PathLike, phase: str, unit: str) -> Path:
    """Return where ``unit`` of ``phase`` records that it finished."""
    return Path(workdir) / phase / "_done" / f"{unit}.json"


def mark_done(
    workdir: str | os.PathLike, phase: str, unit: str, outputs: Sequence[str | os.PathLike],
    info: dict[str, Any] | None = None,
) -> None:
    """Record that ``unit`` finished, with the size of each output (paths relative to workdir)."""
    root = Path(workdir)
    files = {str(Path(p).relative_to(root)): Path(p).stat().st_size for p in outputs}
    write_json(marker_path(root, phase, unit), {"outputs": files, "info": info or {}})


def marker_listing(path: str | os.PathLike) -> Path | None:
    """Return the marker whose outputs list ``path`` (a file ``<workdir>/<phase>/<name>``
    that a unit of ``<phase>`` wrote), or None when no marker of that phase lists it.

    For error messages (it reads every marker of the phase): deleting that marker makes a
    rerun redo the unit and rewrite the file.
    """
    path = Path(path).absolute()
    for marker in sorted((path.parent / "_done").glob("*.json")):
        try:
            with open(marker, encoding="utf-8") as f:
                outputs = json.load(f).get("outputs", {})
        except (OSError, ValueError, AttributeError):
            continue
        if any(path.as_posix().endswith("/" + rel) for rel in outputs):
            return marker
    return None


def is_done(workdir: str | os.PathLike, phase: str, unit: str) -> bool:
    """True when ``unit`` has a marker and all its outputs exist with the recorded sizes."""
    root = Path(workdir)
    path = marker_path(root, phase, unit)
    try:
        with open(path, encoding="utf-8") as f:
            marker = json.load(f)
    except (FileNotFoundError, json.JSONDecodeError):
        return False
    for rel, size in marker.get("outputs", {}).items():
        p = root / rel
        if not p.is_file() or p.stat().st_size != size:
            log.warning("%s/%s: output %s missing or changed; redoing the unit", phase, unit, rel)
            return False
    return True


def done_info(workdir: str | os.PathLike, phase: str, unit: str) -> dict[str, Any]:
    """Return the ``info`` a finished unit recorded."""
    with open(marker_path(workdir, phase, unit), encoding="utf-8") as f:
        return json.load(f).get("info", {})


def done_outputs(workdir: str | os.PathLike, phase: str, unit: str) -> dict[str, int]:
    """Return the outputs a finished unit's marker lists: path relative to ``workdir`` ->
    size in bytes."""
    with open(marker_path(workdir, phase, unit), encoding="utf-8") as f:
        return json.load(f).get("outputs", {})


def run_phase(
    workdir: str | os.PathLike,
    phase: str,
    units: Sequence[str],
    fn: Callable[..., Any],
    args: Sequence[tuple],
    executor: Executor,
    resources: Resources | None = None,
) -> int:
    """Run ``fn(*args[i])`` through ``executor`` for every unit not yet done; return how many ran.

    The executor waits for every unit before it raises
    (:class:`~pipeline.execution.executor.TaskFailures`, the first task's own exception as
    its ``__cause__``), so a failed phase leaves no task still writing when it is rerun.
    ``resources`` is what one unit needs (default: one CPU).
    """
    todo = [i for i, u in enumerate(units) if not is_done(workdir, phase, u)]
    if not todo:
        return 0
    started = time.perf_counter()
    meters = executor.run(metered_call, [(fn, *args[i]) for i in todo],
                          names=[f"{phase}/{units[i]}" for i in todo],
                          desc=f"dedup {phase}", unit="unit", resources=resources or Resources())
    for i in todo:
        if not is_done(workdir, phase, units[i]):
            raise RuntimeError(f"{phase}/{units[i]}: task returned without marking its unit done")
    _record_phase_stats(workdir, phase, units, meters, time.perf_counter() - started)
    return len(todo)


def peak_rss() -> int:
    """This process's peak resident size in bytes since the last reset (Linux ``VmHWM``)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _rss() -> int:
    """This process's resident size in bytes now (0 where ``/proc`` is missing)."""
    try:
        with open("/proc/self/statm", encoding="ascii") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def release_memory() -> None:
    """Return freed memory to the system: Arrow's pool and glibc's arenas keep what a task
    freed, so a worker's resident size would carry its largest task into the next ones."""
    pa.default_memory_pool().release_unused()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


def metered_call(fn: Callable[..., Any], *args: Any) -> dict[str, Any]:
    """Call ``fn(*args)``; return ``{"value", "cpu_s", "wall_s", "peak_rss", "rss_start"}``.

    ``cpu_s`` is the process's CPU time (every thread) during the call; ``peak_rss`` its
    peak resident bytes during the call: a Ray worker runs many tasks, so the kernel's
    high-water mark is reset first (``/proc/self/clear_refs``; where that is refused it is
    the process's lifetime peak, an upper bound). Memory the previous task freed is handed
    back to the system first, so a task's peak does not include what allocators kept.
    """
    release_memory()
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
            f.write("5")
    except OSError:
        pass
    rss_start = _rss()
    cpu, wall = time.process_time(), time.perf_counter()
    value = fn(*args)
    return {"value": value, "cpu_s": time.process_time() - cpu,
            "wall_s": time.perf_counter() - wall, "peak_rss": peak_rss(), "rss_start": rss_start}


def _record_phase_stats(workdir: str | os.PathLike, phase: str, units: Sequence[str],
                        meters: Sequence[dict[str, Any]], wall_s: float) -> None:
    """Write ``<phase>/_stats.json``: CPU, wall time, largest task's peak RSS, bytes written.

    Covers the units this run executed (a resumed phase counts only the rest);
    ``bytes_written`` sums the outputs every unit's marker lists.
    """
    written = 0
    for u in units:
        try:
            written += sum(done_outputs(workdir, phase, u).values())
        except (OSError, json.JSONDecodeError):
            pass
    stats = {
        "units_run": len(meters),
        "cpu_s": round(sum(m["cpu_s"] for m in meters), 3),
        "task_wall_s": round(sum(m["wall_s"] for m in meters), 3),
        "wall_s": round(wall_s, 3),
        "max_task_rss": max(m["peak_rss"] for m in meters),
        "max_task_rss_growth": max(m["peak_rss"] - m["rss_start"] for m in meters),
        "bytes_written": written,
    }
    write_json(Path(workdir) / phase / "_stats.json", stats)
    log.info("%s: %d unit(s), %.1f CPU-s, %.1f s, largest task %.0f MB peak RSS, %.1f MB written",
             phase, stats["units_run"], stats["cpu_s"], wall_s, stats["max_task_rss"] / 1e6,
             written / 1e6)


def check_config(workdir: str | os.PathLike, config: dict[str, Any]) -> None:
    """Record the job's configuration, or refuse a workdir made with a different one."""
    path = Path(workdir) / "_config.json"
    digest = hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()
    if path.exists():
        with open(path, encoding="utf-8") as f:
            old = json.load(f)
        if old.get("digest") != digest:
            raise ValueError(
                f"{path} was written by a different configuration (other options or shards, or "
                "an older version's shuffle files); "
                "use a fresh work directory or delete this one"
            )
        return
    write_json(path, {"digest": digest, "config": config})


def load_config(workdir: str | os.PathLike) -> dict[str, Any]:
    """Return the configuration :func:`check_config` recorded."""
    with open(Path(workdir) / "_config.json", encoding="utf-8") as f:
        return json.load(f)["config"]


def list_phase_files(workdir: str, phase: str) -> list[str]:
    """Return the data files a phase wrote (Parquet, and the shuffle's partitioned ``.parts``
    files), sorted (for tests and inspection)."""
    return sorted(f for ext in ("parquet", "parts")
                  for f in glob.glob(os.path.join(workdir, phase, "**", f"*.{ext}"),
                                     recursive=True))
