"""The runner's columnar path: a stage that is one :class:`TableStep`, run on Arrow tables.

:func:`table_step_of` says whether a stage shard can take it; :func:`stage_tables` reads
the shard's Parquet parts as tables of ``checkpoint_docs`` rows (across part boundaries,
as the document path's chunks are); :func:`apply_table_chunk` runs the step on one and
does the counting, the removed-documents sink and the filtering that
:func:`pipeline.execution.runner.run_chunk_safely` does for documents; :func:`write_table_part`
writes the kept rows. The output is byte-identical to the document path's, which
``REFINERY_DOCUMENT_APPLY=1`` forces (tests compare the two).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.core.step import GlobalStep, RemovedSink, StageShard, Step, StepContext
from pipeline.core.table_step import TableStep
from pipeline.io.writer import atomic_write_table, documents_from_table

#: set to 1 to run every stage on documents (``Step.run``), as before the columnar path
FORCE_DOCUMENTS_ENV = "REFINERY_DOCUMENT_APPLY"


def table_step_of(steps: Sequence[Step], unit: object, schema: pa.Schema) -> TableStep | None:
    """Return the stage's step when the columnar path can run ``unit``: the stage is one
    global step that is a :class:`TableStep`, ``unit`` a :class:`StageShard` whose every
    part has exactly ``schema`` (names and types), and :data:`FORCE_DOCUMENTS_ENV` unset.
    Otherwise None (the runner uses the document path)."""
    if os.environ.get(FORCE_DOCUMENTS_ENV, "") not in ("", "0"):
        return None
    if len(steps) != 1 or not isinstance(unit, StageShard):
        return None
    step = steps[0]
    if not (isinstance(step, TableStep) and isinstance(step, GlobalStep)):
        return None
    for path in unit.files:
        if not pq.read_schema(path).remove_metadata().equals(schema):
            return None
    return step


def stage_tables(files: Sequence[str], shard_id: str, chunk_rows: int, skip: int
                 ) -> Iterator[pa.Table]:
    """Yield the rows of ``files`` (Parquet parts, in order) after the first ``skip``, as
    tables of ``chunk_rows`` rows (the last may be shorter), media type and source filled
    in as :func:`~pipeline.io.writer.documents_from_table` fills them.

    Raises RuntimeError when the parts hold fewer than ``skip`` rows (the input changed).
    """
    done, total = skip, 0
    pending: list[pa.Table] = []
    n_pending = 0
    for path in files:
        pf = pq.ParquetFile(path)
        rows = pf.metadata.num_rows
        total += rows
        if skip >= rows:
            skip -= rows
            continue
        for batch in pf.iter_batches(batch_size=chunk_rows):
            t = pa.Table.from_batches([batch])
            if skip:
                cut = min(skip, t.num_rows)
                t, skip = t.slice(cut), skip - cut
            if t.num_rows:
                pending.append(t)
                n_pending += t.num_rows
            while n_pending >= chunk_rows:
                whole = pa.concat_tables(pending)
                yield _filled(whole.slice(0, chunk_rows))
                rest = whole.slice(chunk_rows)
                pending, n_pending = ([rest], rest.num_rows) if rest.num_rows else ([], 0)
    if skip:  # every part was skipped whole and rows are still owed: nothing was yielded
        raise RuntimeError(
            f"{shard_id}: input now has {total} documents, fewer than the "
            f"{done} already processed; the input changed since the last run"
        )
    if n_pending:
        yield _filled(pa.concat_tables(pending))


def _filled(table: pa.Table) -> pa.Table:
    """``table`` with one chunk per column, an empty or null media type as ``text/plain``
    and a null source as ``""`` (what a Document gets)."""
    if any(c.num_chunks != 1 for c in table.columns):
        table = table.combine_chunks()
    i = table.schema.get_field_index("media_type")
    media = table.column(i)
    if media.null_count or pc.any(pc.equal(media, "")).as_py():
        media = pc.if_else(pc.fill_null(pc.equal(media, ""), True), "text/plain", media)
        table = table.set_column(i, table.schema.field(i), media)
    i = table.schema.get_field_index("source")
    if table.column(i).null_count:
        table = table.set_column(i, table.schema.field(i), pc.fill_null(table.column(i), ""))
    return table


def _chars(text: pa.ChunkedArray | pa.Array) -> int:
    """Characters (code points) of a text column, as ``len(str)`` counts them."""
    return int(pc.sum(pc.utf8_length(text)).as_py() or 0)


def apply_table_chunk(step: TableStep, table: pa.Table, ctx: StepContext,
                      sink: RemovedSink | None) -> pa.Table:
    """Run ``step`` on ``table`` (one chunk of the shard); return the kept rows.

    Counts into ``ctx.stats`` what the document path counts (documents and characters in
    and out, each drop under its reason, the step's time) and passes each dropped row,
    as a document, to ``sink`` in row order.
    """
    t0 = time.perf_counter()
    stats = ctx.stats
    chars_in = _chars(table.column("text"))
    result = step.apply_table(table, ctx)
    keep = np.ones(table.num_rows, dtype=bool)
    keep[result.drop_rows] = False
    kept = result.table.filter(pa.array(keep)) if len(result.drop_rows) else result.table
    stats.docs_in += table.num_rows
    stats.chars_in += chars_in
    for reason in result.reasons:
        stats.dropped[str(reason)] += 1
    if sink is not None and len(result.drop_rows):
        dropped = documents_from_table(result.table.take(pa.array(result.drop_rows)))
        name = step.name  # type: ignore[attr-defined]
        for doc, reason in zip(dropped, result.reasons, strict=True):
            sink(doc, name, reason)
    stats.docs_out += kept.num_rows
    stats.chars_out += _chars(kept.column("text"))
    stats.seconds += time.perf_counter() - t0
    return kept


def write_table_part(table: pa.Table, path: Path, schema: pa.Schema, compression: str) -> None:
    """Write ``table`` as the part ``path`` byte for byte as the document path's writer
    would (one chunk per column, ``schema`` without Arrow metadata): where the chunks of a
    column end decides where pyarrow cuts its pages, so the bytes."""
    columns = [_one_chunk(table.column(n)) for n in schema.names]
    atomic_write_table(pa.Table.from_arrays(columns, schema=schema), path, compression)


def _one_chunk(column: pa.ChunkedArray) -> pa.Array:
    """The column as one array (no copy when it already is one chunk)."""
    return column.chunk(0) if column.num_chunks == 1 else column.combine_chunks()
