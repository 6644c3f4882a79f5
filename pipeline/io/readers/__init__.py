"""Readers turn input shards (WARC, ARC, WET, JSONL, Parquet) into documents.

The runner calls three functions per input file::

    fmt = options.format or detect_format(path)
    for split in range(plan_splits(path, fmt, options)):      # one task each
        for doc in read_shard(path, fmt, split, n_splits, options, stats): ...

Reading is deterministic (same file, same documents, same order) and damaged input never
raises: it is counted in ``stats.counters`` as ``error:<kind>`` with one warning line from
the ``pipeline.io.readers`` logger, and every record that can still be read is yielded.
Records that are fine but not kept are counted as ``skipped:<kind>``. Submodules:
:mod:`.warc` (WARC, WET, ARC), :mod:`.jsonl`, :mod:`.parquet`, :mod:`.charset`, :mod:`.http`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pyarrow as pa

from pipeline.core.document import Document
from pipeline.io.readers.common import Format, ReadOptions, report_error
from pipeline.io.readers.jsonl import plan_jsonl, read_jsonl
from pipeline.io.readers.parquet import plan_parquet, read_parquet
from pipeline.io.readers.warc import read_archive
from pipeline.core.step import StepStats

__all__ = [
    "FORMATS",
    "Format",
    "ReadOptions",
    "SUPPORTED_EXTENSIONS",
    "detect_format",
    "plan_splits",
    "read_shard",
    "resolve_format",
]

FORMATS = ("warc", "arc", "wet", "jsonl", "parquet")

# Longest suffixes first: ".warc.wet.gz" is WET, ".warc.wat.gz" is a (metadata-only) WARC.
_SUFFIXES: tuple[tuple[str, str], ...] = (
    (".warc.wet.gz", "wet"),
    (".wet.gz", "wet"),
    (".wet", "wet"),
    (".warc.wat.gz", "warc"),
    (".wat.gz", "warc"),
    (".wat", "warc"),
    (".warc.gz", "warc"),
    (".warc", "warc"),
    (".arc.gz", "arc"),
    (".arc", "arc"),
    (".jsonl.gz", "jsonl"),
    (".jsonl.zst", "jsonl"),
    (".jsonl", "jsonl"),
    (".json.gz", "jsonl"),
    (".parquet", "parquet"),
)
SUPPORTED_EXTENSIONS = tuple(suffix for suffix, _ in _SUFFIXES)


def detect_format(path: str) -> str:
    """Return the reader format for ``path`` from its extension (case-insensitive).

    Raises ValueError naming the path and the supported extensions when none matches.
    """
    name = os.path.basename(path).lower()
    for suffix, fmt in _SUFFIXES:
        if name.endswith(suffix):
            return fmt
    raise ValueError(
        f"cannot tell the input format of {path!r} from its extension; supported: "
        f"{', '.join(SUPPORTED_EXTENSIONS)} (or set 'format' in the read options)"
    )


def resolve_format(path: str, options: ReadOptions) -> str:
    """The format to read ``path`` with: ``options.format`` if set, else :func:`detect_format`."""
    return options.format or detect_format(path)


def _check_format(fmt: str) -> None:
    if fmt not in FORMATS:
        raise ValueError(f"unknown input format {fmt!r}; known: {', '.join(FORMATS)}")


def plan_splits(path: str, fmt: str, options: ReadOptions) -> int:
    """How many tasks ``path`` becomes: >1 only for big uncompressed JSONL and Parquet files.

    Never raises on bad input: a missing or unreadable file plans as 1 task, whose
    :func:`read_shard` then counts the error.
    """
    _check_format(fmt)
    try:
        if fmt == "jsonl":
            return plan_jsonl(path, options)
        if fmt == "parquet":
            return plan_parquet(path, options)
    except (OSError, pa.ArrowException, ValueError):
        return 1
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

    Takes the format (see :data:`FORMATS`), the split from :func:`plan_splits`, the Read
    options and the stats to count into (``docs_in``: records/lines/rows that could hold a
    document; ``docs_out``, ``chars_out``; ``skipped:*``, ``error:*``, ``http_status:*``).
    Raises ValueError at once for an unknown format or an impossible split; bad input is
    counted, never raised.
    """
    _check_format(fmt)
    if not 0 <= split < n_splits:
        raise ValueError(f"split {split} is not in range(0, {n_splits})")
    if n_splits != 1 and fmt not in ("jsonl", "parquet"):
        raise ValueError(f"{fmt} files are read whole; got n_splits={n_splits} for {path}")
    return _guarded(path, fmt, split, n_splits, options, stats)


def _guarded(
    path: str,
    fmt: str,
    split: int,
    n_splits: int,
    options: ReadOptions,
    stats: StepStats,
) -> Iterator[Document]:
    """Run the format's reader; turn whole-file failures into counted errors."""
    try:
        if fmt == "jsonl":
            yield from read_jsonl(path, split, n_splits, options, stats)
        elif fmt == "parquet":
            yield from read_parquet(path, split, n_splits, options, stats)
        else:
            yield from read_archive(path, fmt, options, stats)
    except FileNotFoundError as exc:
        report_error(stats, path, "missing_file", None, str(exc))
    except OSError as exc:
        report_error(stats, path, "unreadable_file", None, f"{type(exc).__name__}: {exc}")
    except Exception as exc:  # last resort: one bad file must not end the job
        report_error(stats, path, "read_failed", None, f"{type(exc).__name__}: {exc}")
