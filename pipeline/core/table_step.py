"""The optional table-level interface of a step: run it on an Arrow table of documents.

A step whose work is a per-document decision it already holds (a global step after
``load``: drop these ids, set this cluster, cut these lines) can also implement
:class:`TableStep`. When a stage is exactly such a step (a global step followed by no
local steps), the runner reads the stage's Parquet parts as Arrow record batches of
``checkpoint_docs`` rows, calls :meth:`TableStep.apply_table` on each, filters the kept rows
with ``Table.filter`` and writes them with pyarrow, without building a
:class:`~pipeline.core.document.Document` per row. Everything written is byte-identical
to running :meth:`~pipeline.core.step.Step.run` on the documents (tests compare both).

What ``apply_table`` must do to match ``run``:

- return every input row, in order, with the step's changes (columns set with
  :func:`set_column`), and the rows it drops with their reasons (a
  :class:`~pipeline.core.step.Rejection` keeps its record), rows increasing;
- count its own counters in ``ctx.stats.counters`` exactly as ``run`` does (the runner
  counts documents and characters in and out, and the drop reasons);
- record change samples through ``ctx.wants_sample`` / ``ctx.record_sample`` in row
  order, with documents built by :func:`row_document`;
- never call ``ctx.drop``: the runner sends the dropped rows, as documents, to the
  removed-documents sink.

An exception in ``apply_table`` makes the runner redo that chunk on the document path
(``run``), where a document that raises is counted and skipped.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from pipeline.core.document import Document
from pipeline.core.step import StepContext


@dataclass
class TableResult:
    """What :meth:`TableStep.apply_table` did to a table of documents.

    ``table``: every input row in input order, after the step's changes (same schema);
    ``drop_rows``: the indices of the rows it drops, increasing; ``reasons``: one reason
    per dropped row.
    """

    table: pa.Table
    drop_rows: np.ndarray
    reasons: list[str]


class TableStep(ABC):
    """Mixin of a step that can run on a whole Arrow table (see the module docstring)."""

    @abstractmethod
    def apply_table(self, table: pa.Table, ctx: StepContext) -> TableResult:
        """Return what the step does to ``table`` (rows in stage order, with the stage's
        document schema: ``id, url, text, source, media_type``, then metadata columns)."""


def set_column(table: pa.Table, name: str, values: Sequence[Any] | np.ndarray | pa.Array
               ) -> pa.Table:
    """Return ``table`` with column ``name`` replaced by ``values`` (one per row), cast to
    the column's type."""
    i = table.schema.get_field_index(name)
    field = table.schema.field(i)
    arr = values if isinstance(values, pa.Array) else pa.array(values, type=field.type)
    return table.set_column(i, field, arr.cast(field.type))


def row_document(table: pa.Table, row: int) -> Document:
    """Return row ``row`` of ``table`` as the :class:`Document` the document path would see."""
    from pipeline.io.writer import documents_from_table

    return documents_from_table(table.slice(row, 1))[0]
