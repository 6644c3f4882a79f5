"""``dedup_lines_v1``: remove lines that recur across the corpus (CCNet-style).

A line whose normalised form (case folded, digits as 0, punctuation dropped) occurs at
least ``min_count`` times across every shard of the job is removed from every document
that has it. A document left with fewer than ``min_chars`` characters or ``min_words``
words is dropped with reason ``too_short_after_line_dedup``. Run it after exact and
near-duplicate removal: otherwise the lines two copies of a document share are removed
from both.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

import pyarrow as pa
from pydantic import Field

from pipeline.core.document import Document
from pipeline.core.step import GlobalStep, Rejection, StageShard, StepContext, StepOptions
from pipeline.dedup.phases.memory import DEFAULT_TASK_MEMORY_GB, TASK_MEMORY_HELP

if TYPE_CHECKING:
    from pipeline.execution.executor import Executor


#: lines and characters per line a change sample keeps (the report shows the beginning)
SAMPLE_LINES, SAMPLE_LINE_CHARS = 80, 400


class LineDedupOptions(StepOptions):
    """Options of ``dedup_lines_v1``."""

    min_count: int = Field(2, ge=2, description="remove lines occurring at least this often")
    min_chars: int = Field(50, ge=0, description="drop documents left shorter than this")
    min_words: int = Field(10, ge=0, description="drop documents left with fewer words")
    partitions: int = Field(16, ge=1, description="shuffle partitions (reduce tasks)")
    max_map_tasks: int = Field(4096, ge=1, description="map tasks (each reads a run of shards)")
    task_memory_gb: float = Field(DEFAULT_TASK_MEMORY_GB, gt=0, description=TASK_MEMORY_HELP)


class LineDedup(GlobalStep):
    """Removes corpus-frequent lines; drops documents left too short."""

    name = "dedup_lines_v1"
    Options = LineDedupOptions
    metadata_fields = {
        "dedup_lines_removed": pa.int32(),
        "dedup_lines_chars_removed": pa.int64(),
    }

    def __init__(self, options: StepOptions | None = None) -> None:
        super().__init__(options)
        self._frequent: frozenset[int] | None = None

    def prepare(self, shards: list[StageShard], workdir: str, executor: Executor) -> None:
        """Count every normalised line across ``shards`` through ``executor``; resumable
        under ``workdir``."""
        from pipeline.dedup.phases.lines import LinesConfig, prepare_lines

        o = self.options
        prepare_lines(shards, workdir, LinesConfig(min_count=o.min_count, partitions=o.partitions,
                                                   max_map_tasks=o.max_map_tasks,
                                                   task_memory_gb=o.task_memory_gb), executor)

    def load(self, workdir: str, shard_id: str) -> None:
        """Load the frequent line hashes that occur in ``shard_id``."""
        from pipeline.dedup.phases.lines import load_lines

        self._frequent = load_lines(workdir, shard_id)

    def run(self, docs: Iterable[Document], ctx: StepContext) -> Iterator[Document]:
        """Yield documents without their frequent lines, unless too little text is left."""
        from pipeline.dedup.lines import line_hashes, remove_lines

        if self._frequent is None:
            raise RuntimeError(f"{self.name}: load() must be called before run()")
        o = self.options
        for doc in docs:
            result = remove_lines(doc.text, self._frequent)
            doc.metadata["dedup_lines_removed"] = result.lines_removed
            doc.metadata["dedup_lines_chars_removed"] = result.chars_removed
            ctx.stats.counters["lines_removed"] += result.lines_removed
            if result.lines_removed:
                if ctx.wants_sample(doc, self.name):
                    lines = doc.text.split("\n")[:SAMPLE_LINES]
                    flags = line_hashes("\n".join(lines))
                    ctx.record_sample(doc, self.name, {"lines": [
                        [line[:SAMPLE_LINE_CHARS], "frequent" if h in self._frequent else None]
                        for line, h in zip(lines, flags, strict=True) if line.strip()]})
                doc.text = result.text
            chars, words = len(doc.text.strip()), len(doc.text.split())
            if chars < o.min_chars:
                ctx.drop(doc, self.name, Rejection("too_short_after_line_dedup", chars,
                                                   o.min_chars, "<", "characters left"))
            elif words < o.min_words:
                ctx.drop(doc, self.name, Rejection("too_short_after_line_dedup", words,
                                                   o.min_words, "<", "words left"))
            else:
                yield doc
