"""Atomic file writes: every file Refinery writes appears whole or not at all.

A writer writes to a temporary name beside the target (``.NAME.tmp-PID-RANDOM``) and
renames it over the target; a killed writer leaves only a temporary file, which
:func:`remove_stale_temps` deletes when the job is rerun. The random part keeps two
attempts of the same task (a retried Ray task whose first worker is still alive) from
writing into one temporary file.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

TEMP_MARK = ".tmp-"


def temp_path(path: str | os.PathLike, suffix: str = "") -> Path:
    """Return a fresh temporary name beside ``path`` (``suffix`` kept for tools that need it)."""
    path = Path(path)
    return path.with_name(f".{path.name}{TEMP_MARK}{os.getpid()}-{uuid.uuid4().hex[:8]}{suffix}")


@contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path to write; on success rename it to ``path``, else delete it.

    ``suffix`` is appended to the temporary name for writers that add an extension
    (``np.savez`` appends ``.npz`` to names without one). Parent folders are created.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path, suffix)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_bytes(data: bytes, path: str | os.PathLike, fsync: bool = False) -> None:
    """Write ``data`` to ``path`` atomically (``fsync`` first when it must survive power loss)."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(data)
        if fsync:
            f.flush()
            os.fsync(f.fileno())


def atomic_write_text(text: str, path: str | os.PathLike, fsync: bool = False) -> None:
    """Write ``text`` as UTF-8 to ``path`` atomically."""
    atomic_write_bytes(text.encode("utf-8"), path, fsync)


def atomic_write_json(obj: Any, path: str | os.PathLike, indent: int | None = 1,
                      sort_keys: bool = True) -> None:
    """Write ``obj`` as JSON to ``path`` atomically and durably (progress and marker files).

    Values JSON cannot encode are written with ``str``.
    """
    text = json.dumps(obj, indent=indent, sort_keys=sort_keys, default=str)
    atomic_write_bytes(text.encode("utf-8"), path, fsync=True)


def remove_stale_temps(folder: str | os.PathLike) -> int:
    """Delete temporary files that killed writers left under ``folder``; return how many.

    Call it only when no writer of that folder can still be running (a job's start).
    """
    removed = 0
    root = Path(folder)
    if not root.is_dir():
        return 0
    for p in root.rglob(f".*{TEMP_MARK}*"):
        if p.is_file():
            p.unlink(missing_ok=True)
            removed += 1
    return removed
