"""Parquet output: documents to zstd Parquet with a fixed schema, written atomically."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator, Mapping

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.core.document import Document
from pipeline.core.step import REJECTION_KEY, Rejection, UndeclaredMetadataError
from pipeline.io.atomic import atomic_path

BASE_FIELDS: dict[str, pa.DataType] = {
    "id": pa.string(),
    "url": pa.string(),
    "text": pa.string(),
    "source": pa.string(),
    "media_type": pa.string(),
}

REMOVED_FIELDS: dict[str, pa.DataType] = {
    **BASE_FIELDS,
    "removed_by": pa.string(),
    "reason": pa.string(),
    "metadata_json": pa.string(),
}


def documents_schema(metadata_fields: Mapping[str, pa.DataType]) -> pa.Schema:
    """Return the output schema: base columns, then each declared metadata column."""
    fields = dict(BASE_FIELDS)
    for name, dtype in metadata_fields.items():
        if name in fields and fields[name] != dtype:
            raise ValueError(f"metadata field {name!r} declared with two types")
        fields[name] = dtype
    return pa.schema([pa.field(n, t) for n, t in fields.items()])


def atomic_write_table(table: pa.Table, path: str | os.PathLike, compression: str = "zstd") -> None:
    """Write ``table`` to ``path`` as Parquet through a temporary name and a rename."""
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression=compression)


def documents_to_table(docs: Iterable[Document], schema: pa.Schema) -> pa.Table:
    """Return an Arrow table of ``docs`` with the columns of ``schema``.

    A metadata key that is not a column raises :class:`UndeclaredMetadataError` (its value
    would otherwise be lost); a key in ``schema`` that a document lacks is written as null.
    """
    columns: dict[str, list] = {name: [] for name in schema.names}
    metadata_columns = frozenset(schema.names) - BASE_FIELDS.keys()
    for doc in docs:
        if not doc.metadata.keys() <= metadata_columns:
            raise UndeclaredMetadataError(sorted(doc.metadata.keys() - metadata_columns)[0])
        for name in schema.names:
            if name in BASE_FIELDS:
                columns[name].append(getattr(doc, name))
            else:
                columns[name].append(doc.metadata.get(name))
    return pa.table(columns, schema=schema)


def write_documents_parquet(
    docs: Iterable[Document],
    path: str | os.PathLike,
    fields: Mapping[str, pa.DataType],
    compression: str = "zstd",
) -> int:
    """Write ``docs`` with the declared metadata ``fields`` to ``path``; return the row count."""
    table = documents_to_table(docs, documents_schema(fields))
    atomic_write_table(table, path, compression)
    return table.num_rows


def write_removed_parquet(
    removed: list[tuple[Document, str, str]], path: str | os.PathLike, compression: str = "zstd"
) -> int:
    """Write removed documents with the step and reason that removed each; return rows.

    A reason that is a :class:`~pipeline.core.step.Rejection` adds its measured value and
    threshold to the document's ``metadata_json`` under ``_rejection``.
    """
    cols: dict[str, list] = {name: [] for name in REMOVED_FIELDS}
    for doc, step, reason in removed:
        for name in BASE_FIELDS:
            cols[name].append(getattr(doc, name))
        cols["removed_by"].append(step)
        cols["reason"].append(str(reason))
        meta = doc.metadata
        if isinstance(reason, Rejection):  # what the rule measured, for the job report
            meta = {**meta, REJECTION_KEY: reason.to_dict()}
        cols["metadata_json"].append(json.dumps(meta, default=str, sort_keys=True))
    schema = pa.schema([pa.field(n, t) for n, t in REMOVED_FIELDS.items()])
    atomic_write_table(pa.table(cols, schema=schema), path, compression)
    return len(removed)


def documents_from_table(table: pa.Table | pa.RecordBatch) -> list[Document]:
    """Return the rows of a table with the writer's columns as documents: metadata columns
    go into ``metadata`` (null ones left out), a missing media type is ``text/plain`` and a
    missing source ``""``."""
    meta_names = [n for n in table.schema.names if n not in BASE_FIELDS]
    return [
        Document(
            id=row["id"],
            text=row["text"],
            url=row.get("url"),
            media_type=row.get("media_type") or "text/plain",
            source=row.get("source") or "",
            metadata={k: row[k] for k in meta_names if row[k] is not None},
        )
        for row in table.to_pylist()
    ]


def read_documents_parquet(path: str | os.PathLike, batch_size: int = 1024) -> Iterator[Document]:
    """Yield documents from a file written by :func:`write_documents_parquet`."""
    pf = pq.ParquetFile(path)
    for batch in pf.iter_batches(batch_size=batch_size):
        yield from documents_from_table(batch)
