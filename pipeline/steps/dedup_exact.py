"""``dedup_exact_v1``: drop documents whose normalised text repeats an earlier document's.

Across every shard of the job: the copy that comes first in (shard, position) order is
kept, every other copy is dropped with reason ``exact_duplicate``. Normalisation is case
folding and collapsed whitespace (:func:`pipeline.dedup.text.normalize_document`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
from pydantic import Field

from pipeline.core.document import Document
from pipeline.core.step import GlobalStep, Rejection, StageShard, StepContext, StepOptions
from pipeline.core.table_step import TableResult, TableStep
from pipeline.dedup.phases.memory import DEFAULT_TASK_MEMORY_GB, TASK_MEMORY_HELP

if TYPE_CHECKING:
    from pipeline.execution.executor import Executor


class ExactDedupOptions(StepOptions):
    """Options of ``dedup_exact_v1``."""

    partitions: int = Field(16, ge=1, description="shuffle partitions (reduce tasks)")
    max_map_tasks: int = Field(4096, ge=1, description="map tasks (each reads a run of shards)")
    task_memory_gb: float = Field(DEFAULT_TASK_MEMORY_GB, gt=0, description=TASK_MEMORY_HELP)


class ExactDedup(TableStep, GlobalStep):
    """Exact document deduplication across all shards (keeps the first copy)."""

    name = "dedup_exact_v1"
    Options = ExactDedupOptions

    def __init__(self, options: StepOptions | None = None) -> None:
        super().__init__(options)
        self._decisions = None

    def prepare(self, shards: list[StageShard], workdir: str, executor: Executor) -> None:
        """Find every exact duplicate across ``shards`` through ``executor``; resumable
        under ``workdir``."""
        from pipeline.dedup.phases.exact import ExactConfig, prepare_exact

        o = self.options
        prepare_exact(shards, workdir, ExactConfig(partitions=o.partitions,
                                                   max_map_tasks=o.max_map_tasks,
                                                   task_memory_gb=o.task_memory_gb), executor)

    def load(self, workdir: str, shard_id: str) -> None:
        """Load which documents of ``shard_id`` are duplicates."""
        from pipeline.dedup.phases.exact import load_exact

        self._decisions = load_exact(workdir, shard_id)

    def seek(self, position: int) -> None:
        """Match repeated ids from document ``position`` of the shard on (see
        :meth:`GlobalStep.seek`)."""
        if self._decisions is not None:
            self._decisions.seek(position)

    def _rejection(self, keeper: int) -> Rejection:
        # the kept copy as "shard index:position" in the stage's order
        return Rejection("exact_duplicate", f"{keeper >> 32}:{keeper & 0xFFFFFFFF}", None,
                         "copy of", "normalised text identical to the kept document")

    def run(self, docs: Iterable[Document], ctx: StepContext) -> Iterator[Document]:
        """Yield the first copy of each document; drop the others."""
        if self._decisions is None:
            raise RuntimeError(f"{self.name}: load() must be called before run()")
        for doc in docs:
            keeper = self._decisions.get(doc.id)
            if keeper is None:
                yield doc
            else:
                ctx.drop(doc, self.name, self._rejection(keeper))

    def apply_table(self, table: pa.Table, ctx: StepContext) -> TableResult:
        """:meth:`run` on a table: the rows of later copies are dropped."""
        if self._decisions is None:
            raise RuntimeError(f"{self.name}: load() must be called before apply_table()")
        keepers = [self._decisions.get(i) for i in table.column("id").to_pylist()]
        rows = [i for i, k in enumerate(keepers) if k is not None]
        return TableResult(table, np.array(rows, dtype=np.int64),
                           [self._rejection(keepers[i]) for i in rows])
