"""What every reader shares: the Read step's options, its logger and its counters.

Counters follow one naming scheme in :attr:`StepStats.counters`:
``error:<kind>`` for damaged input (always with a one-line warning naming the file and
the byte offset), ``skipped:<kind>`` for records that are fine but not documents we keep,
``http_status:<code>`` for the status of every HTTP response record read,
``decode:replaced_invalid_<codec>`` for documents kept whose bytes were not all valid in
the codec they were decoded with (``utf8`` for most: the text holds U+FFFD where they were).
A document skipped for ``max_doc_bytes`` (``skipped:too_large``) gets a warning line too,
for the first :data:`LOG_FIRST` of a shard; :func:`log_unlogged` sums up the rest.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from pydantic import Field, field_validator

from pipeline.core.document import Document
from pipeline.core.step import StepOptions, StepStats

log = logging.getLogger("pipeline.io.readers")

LOG_FIRST = 5  # warning lines per shard for a kind that may repeat on every record
_RATE_LIMITED = ("skipped:too_large", "error:bad_json")

Format = str  # a registered reader's name (see :func:`pipeline.io.readers.formats`)


class ReadOptions(StepOptions):
    """Options of the Read step (unknown keys are refused by :class:`StepOptions`).

    ``format``: the input format, or ``None`` to take it from each file's extension.
    ``split_bytes``: uncompressed JSONL and Parquet inputs bigger than this become several
    tasks (line-aligned byte ranges, contiguous row-group ranges).
    ``max_doc_bytes``: payloads bigger than this are skipped (``skipped:too_large``).
    ``text_field``/``id_field``/``url_field``: JSONL/Parquet field names; a dotted name
    (``metadata.url``) reaches into nested objects/structs.
    ``html_only``: WARC/ARC keep only HTML/XHTML payloads (others: ``skipped:non_html``).
    ``keep_columns``: Parquet inputs carry their other columns into each document's
    metadata, and the job writes them out again (chained jobs keep earlier steps' scores).
    ``target_shard_bytes``: consecutive input files (in input order) are read by one task
    until their sizes on disk add up to this, so many small files do not each cost a task;
    a file of this size or more, or one that ``split_bytes`` splits, is a task of its own.
    ``None`` (default): one task per file.
    """

    format: Format | None = None
    split_bytes: int = Field(default=256 * 2**20, gt=0)
    max_doc_bytes: int = Field(default=8 * 2**20, gt=0)
    text_field: str = Field(default="text", min_length=1)
    id_field: str = Field(default="id", min_length=1)
    url_field: str = Field(default="url", min_length=1)
    html_only: bool = True
    keep_columns: bool = False
    target_shard_bytes: int | None = Field(default=None, gt=0)

    @field_validator("format")
    @classmethod
    def _known_format(cls, value: str | None) -> str | None:
        from pipeline.io.readers import formats

        if value is not None and value not in formats():
            raise ValueError(f"unknown input format {value!r}; known: {', '.join(formats())}")
        return value


ReadFn = Callable[[str, str, int, int, "ReadOptions", StepStats], Iterator[Document]]
PlanFn = Callable[[str, "ReadOptions"], int]


@dataclass(frozen=True)
class Reader:
    """One input format: its name, file-name suffixes and functions.

    ``read(path, fmt, split, n_splits, options, stats)`` yields the documents of one split;
    ``plan(path, options)`` says how many splits a file becomes (``None``: always read
    whole). A reader module lists its formats in a module-level ``READERS`` tuple; adding a
    format means adding one module to :mod:`pipeline.io.readers`.
    """

    name: str
    suffixes: tuple[str, ...]
    read: ReadFn
    plan: PlanFn | None = None


def report_error(
    stats: StepStats,
    path: str,
    kind: str,
    offset: int | None,
    detail: str,
    log_first: int | None = None,
) -> None:
    """Count ``error:<kind>`` in ``stats`` and log one warning line naming file and offset.

    With ``log_first``, only the first that many errors of this kind in ``stats`` are
    logged (per-line errors in a big JSONL file would otherwise flood the log); the count
    is always exact.
    """
    stats.counters[f"error:{kind}"] += 1
    if log_first is not None and stats.counters[f"error:{kind}"] > log_first:
        return
    where = "?" if offset is None else str(offset)
    log.warning("%s: %s at byte %s: %s", path, kind, where, detail.replace("\n", " ")[:300])


def count_skip(stats: StepStats, kind: str) -> None:
    """Count one record skipped for reason ``kind`` (``skipped:<kind>``)."""
    stats.counters[f"skipped:{kind}"] += 1


def skip_too_large(stats: StepStats, path: str, record: str, size: str, limit: int) -> None:
    """Count a document skipped for being over ``max_doc_bytes`` (``skipped:too_large``).

    Takes the stats, the file, the record (e.g. ``"at byte 1234 (https://...)"``), its size
    as text (``"9437184 bytes"``) and the limit. Logs one warning line for each of the
    first :data:`LOG_FIRST` of a shard; :func:`log_unlogged` reports the rest in one line.
    """
    count_skip(stats, "too_large")
    if stats.counters["skipped:too_large"] <= LOG_FIRST:
        log.warning("%s: record %s skipped: %s, over max_doc_bytes (%d)",
                    path, record, size, limit)


def log_unlogged(stats: StepStats, path: str) -> None:
    """After a shard: one warning line per rate-limited kind that had more than
    :data:`LOG_FIRST` occurrences (their total; only the first ones had a line each)."""
    for key in _RATE_LIMITED:
        n = stats.counters.get(key, 0)
        if n > LOG_FIRST:
            log.warning("%s: %d records in all counted as %s (a line was logged for the "
                        "first %d only)", path, n, key, LOG_FIRST)


def count_replaced(stats: StepStats, codec: str) -> None:
    """Count a kept document whose bytes were not all valid ``codec`` (a Python codec name;
    ``utf-8`` counts as ``decode:replaced_invalid_utf8``)."""
    name = codec.lower().replace("-", "").replace("_", "")
    stats.counters[f"decode:replaced_invalid_{name}"] += 1


def emit(stats: StepStats, doc: Document) -> Document:
    """Count ``doc`` as produced (``docs_out``, ``chars_out``) and return it."""
    stats.docs_out += 1
    stats.chars_out += len(doc.text)
    return doc


def clean_str(value: str) -> tuple[str, bool]:
    """Return ``value`` made encodable as UTF-8 (lone surrogates replaced) and whether it changed.

    JSON escapes such as ``"\\ud800"`` decode to lone surrogates, which Arrow/Parquet writers
    refuse; replacing them here keeps one bad string from failing a whole output shard.
    """
    if value.isascii():
        return value, False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return value.encode("utf-8", "replace").decode("utf-8"), True
    return value, False
