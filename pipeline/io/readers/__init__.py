"""Readers turn input shards (WARC, ARC, WET, JSONL, Parquet) into documents.

The runner calls three functions per input file::

    fmt = options.format or detect_format(path)
    for split in range(plan_splits(path, fmt, options)):      # one task each
        for doc in read_shard(path, fmt, split, n_splits, options, stats): ...

Reading is deterministic (same file, same documents, same order) and damaged input never
raises: it is counted in ``stats.counters`` as ``error:<kind>`` with one warning line from
the ``pipeline.io.readers`` logger, and every record that can still be read is yielded.
Records that are fine but not kept are counted as ``skipped:<kind>``. Formats are registered
by their modules (each lists ``READERS``): :mod:`.warc` (WARC, WET, ARC), :mod:`.jsonl`,
:mod:`.parquet`; helpers: :mod:`.common`, :mod:`.charset`, :mod:`.http`.
"""

from __future__ import annotations

import importlib
import os
import pkgutil
from collections.abc import Iterator
from functools import cache

import pyarrow as pa

from pipeline.core.document import Document
from pipeline.core.step import StepStats
from pipeline.io.readers.common import Format, Reader, ReadOptions, log_unlogged, report_error

__all__ = [
    "Format",
    "Reader",
    "ReadOptions",
    "detect_format",
    "formats",
    "plan_splits",
    "read_shard",
    "resolve_format",
    "supported_extensions",
]


@cache
def _registry() -> dict[str, Reader]:
    """Every reader that a module of this package lists in its ``READERS`` tuple, by name."""
    found: dict[str, Reader] = {}
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{__name__}.{info.name}")
        for reader in getattr(module, "READERS", ()):
            if reader.name in found:
                raise RuntimeError(f"input format {reader.name!r} is registered twice")
            found[reader.name] = reader
    return found


def formats() -> tuple[str, ...]:
    """Return the names of every registered input format."""
    return tuple(_registry())


@cache
def _suffixes() -> tuple[tuple[str, str], ...]:
    # Longest suffixes first: ".warc.wet.gz" is WET although it also ends in ".wet.gz".
    pairs = [(s, r.name) for r in _registry().values() for s in r.suffixes]
    return tuple(sorted(pairs, key=lambda p: -len(p[0])))


def supported_extensions() -> tuple[str, ...]:
    """Return every file-name suffix a registered reader claims."""
    return tuple(s for s, _ in _suffixes())


def detect_format(path: str) -> str:
    """Return the reader format for ``path`` from its extension (case-insensitive).

    Raises ValueError naming the path and the supported extensions when none matches.
    """
    name = os.path.basename(path).lower()
    for suffix, fmt in _suffixes():
        if name.endswith(suffix):
            return fmt
    raise ValueError(
        f"cannot tell the input format of {path!r} from its extension; supported: "
        f"{', '.join(supported_extensions())} (or set 'format' in the read options)"
    )


def resolve_format(path: str, options: ReadOptions) -> str:
    """The format to read ``path`` with: ``options.format`` if set, else :func:`detect_format`."""
    return options.format or detect_format(path)


def _reader(fmt: str) -> Reader:
    registry = _registry()
    if fmt not in registry:
        raise ValueError(f"unknown input format {fmt!r}; known: {', '.join(registry)}")
    return registry[fmt]


def plan_splits(path: str, fmt: str, options: ReadOptions) -> int:
    """How many tasks ``path`` becomes: >1 only for big uncompressed JSONL and Parquet files.

    Never raises on bad input: a missing or unreadable file plans as 1 task, whose
    :func:`read_shard` then counts the error.
    """
    reader = _reader(fmt)
    if reader.plan is None:
        return 1
    try:
        return reader.plan(path, options)
    except (OSError, pa.ArrowException, ValueError):
        return 1


def read_shard(
    path: str,
    fmt: str,
    split: int,
    n_splits: int,
    options: ReadOptions,
    stats: StepStats,
) -> Iterator[Document]:
    """Yield the documents of split ``split`` (of ``n_splits``) of the file at ``path``.

    Takes the format (see :func:`formats`), the split from :func:`plan_splits`, the Read
    options and the stats to count into (``docs_in``: records/lines/rows that could hold a
    document; ``docs_out``, ``chars_out``; ``skipped:*``, ``error:*``, ``http_status:*``).
    Raises ValueError at once for an unknown format or an impossible split; bad input is
    counted, never raised.
    """
    reader = _reader(fmt)
    if not 0 <= split < n_splits:
        raise ValueError(f"split {split} is not in range(0, {n_splits})")
    if n_splits != 1 and reader.plan is None:
        raise ValueError(f"{fmt} files are read whole; got n_splits={n_splits} for {path}")
    return _guarded(reader, path, fmt, split, n_splits, options, stats)


def _guarded(
    reader: Reader,
    path: str,
    fmt: str,
    split: int,
    n_splits: int,
    options: ReadOptions,
    stats: StepStats,
) -> Iterator[Document]:
    """Run the format's reader; turn whole-file failures into counted errors."""
    try:
        yield from reader.read(path, fmt, split, n_splits, options, stats)
    except FileNotFoundError as exc:
        report_error(stats, path, "missing_file", None, str(exc))
    except OSError as exc:
        report_error(stats, path, "unreadable_file", None, f"{type(exc).__name__}: {exc}")
    except Exception as exc:  # last resort: one bad file must not end the job
        report_error(stats, path, "read_failed", None, f"{type(exc).__name__}: {exc}")
    log_unlogged(stats, path)
