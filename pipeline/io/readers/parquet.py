"""Parquet reader: row groups in record batches, contiguous row-group ranges as splits.

A file whose row groups hold more than ``split_bytes`` (uncompressed, from the footer)
becomes several tasks; split ``k`` of ``n`` owns the row groups whose first byte (in the
running sum of row-group sizes) lies in ``[k*total//n, (k+1)*total//n)``. Only the text,
id and url columns are read (a dotted name reaches into a struct column), in batches of
:data:`BATCH_ROWS` rows; texts over ``max_doc_bytes`` are counted from their Arrow byte
length and never turned into Python strings. A damaged row group is ``error:bad_parquet``
and reading goes on with the next row group.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.core.document import Document
from pipeline.core.step import StepStats
from pipeline.io.readers.common import (
    Reader,
    ReadOptions,
    count_skip,
    emit,
    log,
    report_error,
    skip_too_large,
)

BATCH_ROWS = 1024


def plan_parquet(path: str, options: ReadOptions) -> int:
    """Number of tasks for a Parquet file: ``ceil(uncompressed bytes / split_bytes)``, at most one per row group."""
    meta = pq.read_metadata(path)
    groups = meta.num_row_groups
    if groups <= 1:
        return 1
    total = sum(meta.row_group(i).total_byte_size for i in range(groups))
    return max(1, min(groups, math.ceil(total / options.split_bytes)))


def split_row_groups(meta: pq.FileMetaData, split: int, n_splits: int) -> list[int]:
    """The contiguous row-group indices that split ``split`` of ``n_splits`` owns."""
    groups = meta.num_row_groups
    sizes = [meta.row_group(i).total_byte_size for i in range(groups)]
    total = sum(sizes)
    owned: list[int] = []
    running = 0
    for i, size in enumerate(sizes):
        owner = running * n_splits // total if total > 0 else i * n_splits // groups
        if min(owner, n_splits - 1) == split:
            owned.append(i)
        running += size
    return owned


def _column_names(schema: pa.Schema, name: str) -> str | None:
    """The top-level column that holds field ``name`` (itself, or the first part of a dotted name)."""
    if name in schema.names:
        return name
    head = name.split(".", 1)[0]
    return head if "." in name and head in schema.names else None


def _field_array(batch: pa.RecordBatch, name: str) -> pa.Array | None:
    """Return the array for field ``name`` in ``batch`` (following struct fields), or None."""
    if name in batch.schema.names:
        return batch.column(name)
    parts = name.split(".")
    if parts[0] not in batch.schema.names:
        return None
    array = batch.column(parts[0])
    for part in parts[1:]:
        if not pa.types.is_struct(array.type) or array.type.get_field_index(part) < 0:
            return None
        array = pc.struct_field(array, part)
    return array


def _strings(array: pa.Array | None) -> list[str | None] | None:
    """Python strings (or None) for a string/binary/integer array, else None."""
    if array is None:
        return None
    kind = array.type
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        return array.to_pylist()
    if pa.types.is_binary(kind) or pa.types.is_large_binary(kind):
        return [v.decode("utf-8", "replace") if v is not None else None for v in array.to_pylist()]
    if pa.types.is_integer(kind):
        return [str(v) if v is not None else None for v in array.to_pylist()]
    return None


def passthrough_columns(schema: pa.Schema, options: ReadOptions) -> list[str]:
    """Columns that ``keep_columns`` carries into metadata: all but text, id, url and the
    writer's own base columns."""
    if not options.keep_columns:
        return []
    core = {options.text_field, options.id_field, options.url_field, "text", "id", "url",
            "source", "media_type"}
    return [name for name in schema.names if name not in core]


def read_parquet(
    path: str, split: int, n_splits: int, options: ReadOptions, stats: StepStats
) -> Iterator[Document]:
    """Yield the documents of split ``split`` of ``n_splits`` of a Parquet file.

    Takes the path, the split, the Read options and the stats to count into. Documents get
    ``media_type="text/plain"``; a missing id becomes ``<basename>:<row number in the file>``.
    """
    if os.path.getsize(path) == 0:
        report_error(stats, path, "empty_file", 0, "file is empty")
        return
    try:
        # pages written with CRCs are verified; files without them cannot be
        pfile = pq.ParquetFile(path, page_checksum_verification=True)
    except (OSError, pa.ArrowException) as exc:
        report_error(stats, path, "bad_parquet", None, f"unreadable footer: {exc}")
        return
    meta = pfile.metadata
    groups = split_row_groups(meta, split, n_splits)
    schema = pfile.schema_arrow
    text_column = _column_names(schema, options.text_field)
    if text_column is None:
        rows = sum(meta.row_group(i).num_rows for i in groups)
        stats.docs_in += rows
        stats.counters["skipped:no_text_field"] += rows
        log.warning("%s: no column %r; %d rows skipped", path, options.text_field, rows)
        return
    columns = [text_column]
    for name in (options.id_field, options.url_field):
        column = _column_names(schema, name)
        if column is not None and column not in columns:
            columns.append(column)
    extra = [n for n in passthrough_columns(schema, options) if n not in columns]
    columns += extra
    row_of_group = [0]
    for i in range(meta.num_row_groups):
        row_of_group.append(row_of_group[-1] + meta.row_group(i).num_rows)
    limit = options.max_doc_bytes
    for group in groups:
        row = row_of_group[group]
        try:
            batches = pfile.iter_batches(
                batch_size=BATCH_ROWS, row_groups=[group], columns=columns, use_threads=False
            )
            for batch in batches:
                yield from _batch_documents(batch, row, path, options, stats, limit, extra)
                row += batch.num_rows
        except (OSError, pa.ArrowException, ValueError) as exc:
            first = meta.row_group(group).column(0)
            offset = first.dictionary_page_offset or first.data_page_offset
            detail = f"row group {group} (row {row}): {type(exc).__name__}: {exc}"
            report_error(stats, path, "bad_parquet", offset, detail)


def _batch_documents(
    batch: pa.RecordBatch,
    first_row: int,
    path: str,
    options: ReadOptions,
    stats: StepStats,
    limit: int,
    extra: list[str],
) -> Iterator[Document]:
    source = os.path.basename(path)
    texts_array = _field_array(batch, options.text_field)
    n = batch.num_rows
    stats.docs_in += n
    if texts_array is None or not (
        pa.types.is_string(texts_array.type)
        or pa.types.is_large_string(texts_array.type)
        or pa.types.is_binary(texts_array.type)
        or pa.types.is_large_binary(texts_array.type)
    ):
        stats.counters["skipped:no_text_field"] += n
        return
    sizes = pc.binary_length(texts_array)
    small = pc.fill_null(pc.less_equal(sizes, limit), True)
    texts = _strings(pc.if_else(small, texts_array, pa.scalar(None, texts_array.type))) or []
    size_list = sizes.to_pylist()
    ids = _strings(_field_array(batch, options.id_field))
    urls = _strings(_field_array(batch, options.url_field))
    extra_values = {name: batch.column(name).to_pylist() for name in extra}
    for i in range(n):
        text = texts[i]
        if text is None:
            if size_list[i] is None:
                count_skip(stats, "no_text_field")
            else:
                skip_too_large(stats, path, f"at row {first_row + i}", f"{size_list[i]} bytes",
                               limit)
            continue
        if not text:
            count_skip(stats, "empty")
            continue
        doc_id = ids[i] if ids is not None and ids[i] else f"{source}:{first_row + i}"
        url = urls[i] if urls is not None and urls[i] else None
        doc = Document(doc_id, text, url, "text/plain", source)
        for name, values in extra_values.items():
            if values[i] is not None:
                doc.metadata[name] = values[i]
        yield emit(stats, doc)


READERS = (
    Reader("parquet", (".parquet",),
           lambda path, fmt, split, n, options, stats: read_parquet(path, split, n, options, stats),
           plan_parquet),
)

