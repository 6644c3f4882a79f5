"""JSON Lines reader (plain, gzip, zstd), with line-aligned byte-range splits.

Each line is one JSON object; ``text``/``id``/``url`` come from the configured fields
(a dotted name such as ``metadata.url`` reaches into nested objects; a key that itself
contains the dot wins). Other fields are dropped. A line that is not valid JSON or not
valid UTF-8 is ``error:bad_json``; a line without a string in the text field is
``skipped:no_text_field``. Compression is recognised by magic bytes, not by extension.

Split ``k`` of ``n`` of an uncompressed file owns the lines whose first byte lies in
``[k*size//n, (k+1)*size//n)``: it starts after the first newline at or after byte
``start - 1`` and finishes the line that crosses its end, so each line is read once.
"""

from __future__ import annotations

import gzip
import io
import json
import math
import os
import zlib
from collections.abc import Iterator
from typing import Any, BinaryIO

import zstandard

from pipeline.core.document import Document
from pipeline.core.step import StepStats
from pipeline.io.readers.common import (
    LOG_FIRST,
    Reader,
    ReadOptions,
    clean_str,
    count_skip,
    emit,
    report_error,
    skip_too_large,
)

_GZIP = b"\x1f\x8b"
_ZSTD = b"\x28\xb5\x2f\xfd"
_BOM = b"\xef\xbb\xbf"


def _compression(path: str) -> str | None:
    with open(path, "rb") as fh:
        magic = fh.read(4)
    if magic.startswith(_GZIP):
        return "gzip"
    if magic == _ZSTD:
        return "zstd"
    return None


def plan_jsonl(path: str, options: ReadOptions) -> int:
    """Number of tasks for a JSONL file: 1 if compressed, else ``ceil(size / split_bytes)``."""
    if _compression(path) is not None:
        return 1
    return max(1, math.ceil(os.path.getsize(path) / options.split_bytes))


def field_value(obj: dict[str, Any], name: str) -> Any:
    """Return ``obj[name]``, or follow a dotted ``name`` through nested dicts; None if absent."""
    if name in obj:
        return obj[name]
    if "." not in name:
        return None
    value: Any = obj
    for part in name.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def _open_stream(fh: BinaryIO, compression: str | None) -> BinaryIO:
    if compression == "gzip":
        return gzip.GzipFile(fileobj=fh, mode="rb")  # type: ignore[return-value]
    if compression == "zstd":
        reader = zstandard.ZstdDecompressor().stream_reader(fh, read_across_frames=True)
        return io.BufferedReader(reader, 1 << 20)  # type: ignore[arg-type,return-value]
    return fh


def _stream_error_kind(exc: BaseException, compression: str | None) -> str:
    if isinstance(exc, EOFError):
        return "truncated"
    if compression == "zstd":
        return "corrupt_zstd"
    if compression == "gzip":
        return "corrupt_gzip"
    return "read_error"


def read_jsonl(
    path: str, split: int, n_splits: int, options: ReadOptions, stats: StepStats
) -> Iterator[Document]:
    """Yield the documents of split ``split`` of ``n_splits`` of a JSONL file.

    Takes the path, the split, the Read options and the stats to count into. Documents get
    ``media_type="text/plain"``; a missing id becomes ``<basename>:<byte offset of the line>``
    (offset in the decompressed stream), which is the same whatever the splits.
    """
    compression = _compression(path)
    if compression is not None and n_splits != 1:
        raise ValueError(f"{path}: a compressed JSONL file cannot be split (n_splits={n_splits})")
    source = os.path.basename(path)
    with open(path, "rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        if size == 0:
            report_error(stats, path, "empty_file", 0, "file is empty")
            return
        if compression is None:
            start = split * size // n_splits
            end = (split + 1) * size // n_splits
            pos = 0
            if start > 0:
                fh.seek(start - 1)
                pos = start - 1 + len(fh.readline())
            else:
                fh.seek(0)
        else:
            pos, end = 0, math.inf
        stream = _open_stream(fh, compression)
        while pos < end:
            try:
                line = stream.readline()
            except (OSError, EOFError, zlib.error, zstandard.ZstdError) as exc:
                kind = _stream_error_kind(exc, compression)
                detail = f"{type(exc).__name__}: {exc} (offset in the decompressed stream)"
                report_error(stats, path, kind, pos, detail)
                return
            if not line:
                return
            line_pos = pos
            pos += len(line)
            doc = _line_document(line, line_pos, path, source, options, stats)
            if doc is not None:
                yield emit(stats, doc)


def _line_document(
    line: bytes,
    line_pos: int,
    path: str,
    source: str,
    options: ReadOptions,
    stats: StepStats,
) -> Document | None:
    """Parse one JSONL line into a document, or count why not and return None."""
    data = line.strip()
    if line_pos == 0 and data.startswith(_BOM):
        data = data[len(_BOM) :].lstrip()
    if not data:
        count_skip(stats, "blank_line")
        return None
    stats.docs_in += 1
    try:
        obj = json.loads(data)
    except (ValueError, RecursionError) as exc:
        detail = f"{type(exc).__name__}: {exc}"
        report_error(stats, path, "bad_json", line_pos, detail, log_first=LOG_FIRST)
        return None
    if not isinstance(obj, dict):
        detail = f"line holds a JSON {type(obj).__name__}, not an object"
        report_error(stats, path, "bad_json", line_pos, detail, log_first=LOG_FIRST)
        return None
    text = field_value(obj, options.text_field)
    if not isinstance(text, str):
        count_skip(stats, "no_text_field")
        return None
    if not text:
        count_skip(stats, "empty")
        return None
    if len(data) > options.max_doc_bytes:
        size = len(text.encode("utf-8", "surrogatepass"))
        if size > options.max_doc_bytes:
            record = f"at byte {line_pos} (line offset in the decompressed stream)"
            skip_too_large(stats, path, record, f"{size} bytes of text", options.max_doc_bytes)
            return None
    text, repaired = clean_str(text)
    raw_id = field_value(obj, options.id_field)
    if isinstance(raw_id, str) and raw_id:
        doc_id, fixed_id = clean_str(raw_id)
        repaired |= fixed_id
    elif isinstance(raw_id, int) and not isinstance(raw_id, bool):
        doc_id = str(raw_id)
    else:
        doc_id = f"{source}:{line_pos}"
    raw_url = field_value(obj, options.url_field)
    url = None
    if isinstance(raw_url, str) and raw_url:
        url, fixed_url = clean_str(raw_url)
        repaired |= fixed_url
    if repaired:
        stats.counters["repaired:lone_surrogates"] += 1
    return Document(doc_id, text, url, "text/plain", source)


READERS = (
    Reader("jsonl", (".jsonl.gz", ".jsonl.zst", ".jsonl", ".json.gz"),
           lambda path, fmt, split, n, options, stats: read_jsonl(path, split, n, options, stats),
           plan_jsonl),
)

