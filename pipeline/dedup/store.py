"""Resumable on-disk phases for the cross-shard deduplication jobs.

Every phase of a job is a set of units (a shard, a partition, a group of shards). A
unit's task writes its output files atomically (temporary name, then ``os.replace``) and
then a marker ``<phase>/_done/<unit>.json`` that lists each output file with its size. A
rerun skips a unit only when its marker exists and every listed file is still there with
that size, so a crash between outputs and marker, a deleted output or a truncated one all
make the unit run again. Units are deterministic, so redoing one reproduces the same bytes
and later phases stay valid.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

log = logging.getLogger("pipeline.dedup")


class InjectedFailure(RuntimeError):
    """Raised by a task when a test asks a phase to fail at a given unit."""


def _tmp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")


def write_table(path: str | os.PathLike, columns: dict[str, np.ndarray | list]) -> int:
    """Write ``columns`` as a zstd Parquet file atomically; return its size in bytes."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_name(path)
    table = pa.table({k: pa.array(v) for k, v in columns.items()})
    pq.write_table(table, tmp, compression="zstd")
    os.replace(tmp, path)
    return path.stat().st_size


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
    """Write ``obj`` as JSON atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_name(path)
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=1, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


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


def maybe_fail(fail_at: tuple[str, int] | None, phase: str, index: int) -> None:
    """Raise :class:`InjectedFailure` when a test asked ``phase`` to fail at unit ``index``."""
    if fail_at is not None and fail_at[0] == phase and fail_at[1] == index:
        raise InjectedFailure(f"injected failure in {phase} unit {index}")


def run_phase(
    workdir: str | os.PathLike,
    phase: str,
    units: Sequence[str],
    fn: Callable[..., Any],
    args: Sequence[tuple],
    num_cpus: float = 1,
    memory: int | None = None,
) -> int:
    """Run ``fn(*args[i])`` as a Ray task for every unit not yet done; return how many ran.

    Waits for every task it started before raising the first error, so a failed phase
    leaves no task still writing when the caller reruns it.
    """
    import ray

    todo = [i for i, u in enumerate(units) if not is_done(workdir, phase, u)]
    if not todo:
        return 0
    opts: dict[str, Any] = {"num_cpus": num_cpus, "max_retries": 2, "retry_exceptions": False}
    if memory:
        opts["memory"] = memory
    remote = _remote(fn).options(**opts)
    refs = [remote.remote(*args[i]) for i in todo]
    first_error: BaseException | None = None
    for ref in refs:
        try:
            ray.get(ref)
        except BaseException as e:  # noqa: BLE001 - re-raised after the others finish
            if first_error is None:
                first_error = e
    if first_error is not None:
        raise first_error
    for i in todo:
        if not is_done(workdir, phase, units[i]):
            raise RuntimeError(f"{phase}/{units[i]}: task returned without marking its unit done")
    return len(todo)


_REMOTES: dict[Callable[..., Any], Any] = {}


def _remote(fn: Callable[..., Any]) -> Any:
    import ray

    if fn not in _REMOTES:
        _REMOTES[fn] = ray.remote(fn)
    return _REMOTES[fn]


def check_config(workdir: str | os.PathLike, config: dict[str, Any]) -> None:
    """Record the job's configuration, or refuse a workdir made with a different one."""
    path = Path(workdir) / "_config.json"
    digest = hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()
    if path.exists():
        with open(path, encoding="utf-8") as f:
            old = json.load(f)
        if old.get("digest") != digest:
            raise ValueError(
                f"{path} was written by a different configuration (other options or shards); "
                "use a fresh work directory or delete this one"
            )
        return
    write_json(path, {"digest": digest, "config": config})


def load_config(workdir: str | os.PathLike) -> dict[str, Any]:
    """Return the configuration :func:`check_config` recorded."""
    with open(Path(workdir) / "_config.json", encoding="utf-8") as f:
        return json.load(f)["config"]
