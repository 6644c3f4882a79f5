"""What every reader shares: the Read step's options, its logger and its counters.

Counters follow one naming scheme in :attr:`StepStats.counters`:
``error:<kind>`` for damaged input (always with a one-line warning naming the file and
the byte offset), ``skipped:<kind>`` for records that are fine but not documents we keep,
``http_status:<code>`` for the status of every HTTP response record read.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from pydantic import Field, field_validator

from pipeline.core.document import Document
from pipeline.core.step import StepOptions, StepStats

log = logging.getLogger("pipeline.io.readers")

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
    """

    format: Format | None = None
    split_bytes: int = Field(default=256 * 2**20, gt=0)
    max_doc_bytes: int = Field(default=8 * 2**20, gt=0)
    text_field: str = Field(default="text", min_length=1)
    id_field: str = Field(default="id", min_length=1)
    url_field: str = Field(default="url", min_length=1)
    html_only: bool = True
    keep_columns: bool = False

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
