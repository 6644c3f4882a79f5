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

import numpy as np
import pyarrow as pa
from pydantic import Field

from pipeline.core.document import Document
from pipeline.core.step import GlobalStep, Rejection, StageShard, StepContext, StepOptions
from pipeline.core.table_step import TableResult, TableStep, row_document, set_column
from pipeline.dedup.phases.memory import DEFAULT_TASK_MEMORY_GB, TASK_MEMORY_HELP

if TYPE_CHECKING:
    from pipeline.dedup.native_lines import LineCut
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


class LineDedup(TableStep, GlobalStep):
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
        self._frequent_sorted: np.ndarray | None = None  # for the native cut, built once

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
        self._frequent_sorted = None

    def run(self, docs: Iterable[Document], ctx: StepContext) -> Iterator[Document]:
        """Yield documents without their frequent lines, unless too little text is left."""
        from pipeline.dedup.lines import remove_lines

        if self._frequent is None:
            raise RuntimeError(f"{self.name}: load() must be called before run()")
        for doc in docs:
            result = remove_lines(doc.text, self._frequent)
            doc.metadata["dedup_lines_removed"] = result.lines_removed
            doc.metadata["dedup_lines_chars_removed"] = result.chars_removed
            ctx.stats.counters["lines_removed"] += result.lines_removed
            if result.lines_removed:
                if ctx.wants_sample(doc, self.name):
                    ctx.record_sample(doc, self.name, self._sample(doc.text))
                doc.text = result.text
            reason = self._too_short(doc.text)
            if reason is None:
                yield doc
            else:
                ctx.drop(doc, self.name, reason)

    def apply_table(self, table: pa.Table, ctx: StepContext) -> TableResult:
        """:meth:`run` on a table: the text column rewritten, the count columns set, the
        rows left too short dropped (the cutting in C over the Arrow buffers when the native
        extension is built, else :func:`~pipeline.dedup.lines.remove_lines` per row)."""
        from pipeline.dedup import native_lines

        if self._frequent is None:
            raise RuntimeError(f"{self.name}: load() must be called before apply_table()")
        column = table.column("text")
        text = column.chunk(0) if column.num_chunks == 1 else column.combine_chunks()
        if native_lines.can_cut() and not text.null_count:
            if self._frequent_sorted is None:
                self._frequent_sorted = np.sort(np.fromiter(self._frequent, dtype=np.int64,
                                                            count=len(self._frequent)))
            cut = native_lines.cut_lines(text, self._frequent_sorted, self.options.min_words)
        else:
            cut = self._cut_in_python(text)
        if len(text):
            ctx.stats.counters["lines_removed"] += int(cut.lines_removed.sum())
        changed = np.flatnonzero(cut.lines_removed)
        if len(changed):
            ids = table.column("id").take(pa.array(changed)).to_pylist()
            for i, doc_id in zip(changed.tolist(), ids, strict=True):
                if ctx.wants_sample(Document(doc_id, ""), self.name):
                    ctx.record_sample(row_document(table, i), self.name,
                                      self._sample(text[i].as_py()))
            table = set_column(table, "text", cut.text)
        table = set_column(table, "dedup_lines_removed", cut.lines_removed)
        table = set_column(table, "dedup_lines_chars_removed", cut.chars_removed)
        o = self.options
        short = (cut.chars_left < o.min_chars) | (cut.words_left < o.min_words)
        rows = np.flatnonzero(short)
        reasons = [self._short_reason(int(cut.chars_left[i]), int(cut.words_left[i]))
                   for i in rows.tolist()]
        return TableResult(table, rows.astype(np.int64), reasons)

    def _cut_in_python(self, text: pa.Array) -> LineCut:
        """:func:`~pipeline.dedup.lines.remove_lines` on every string of ``text``, with the
        counts :func:`pipeline.dedup.native_lines.cut_lines` gives (no native extension)."""
        from pipeline.dedup.lines import remove_lines
        from pipeline.dedup.native_lines import LineCut

        assert self._frequent is not None
        texts = text.to_pylist()
        n = len(texts)
        cut = LineCut(text, np.zeros(n, np.int32), np.zeros(n, np.int64),
                      np.zeros(n, np.int64), np.zeros(n, np.int64))
        for i, t in enumerate(texts):
            result = remove_lines(t, self._frequent)
            if result.lines_removed:
                texts[i] = t = result.text
                cut.lines_removed[i], cut.chars_removed[i] = (result.lines_removed,
                                                              result.chars_removed)
            cut.chars_left[i], cut.words_left[i] = len(t.strip()), len(t.split())
        if cut.lines_removed.any():
            cut.text = pa.array(texts, pa.string())
        return cut

    def _sample(self, text: str) -> dict:
        """The change sample of a document whose text before the cut is ``text``: its first
        lines, each flagged when it is frequent."""
        from pipeline.dedup.lines import line_hashes

        assert self._frequent is not None
        lines = text.split("\n")[:SAMPLE_LINES]
        flags = line_hashes("\n".join(lines))
        return {"lines": [
            [line[:SAMPLE_LINE_CHARS], "frequent" if h in self._frequent else None]
            for line, h in zip(lines, flags, strict=True) if line.strip()]}

    def _too_short(self, text: str) -> Rejection | None:
        """The rejection of a document left with ``text``, or None when it is long enough."""
        o = self.options
        chars = len(text.strip())
        if chars < o.min_chars:
            return self._short_reason(chars, 0)
        # at most min_words + 1 pieces: the exact count whenever it is below min_words
        words = len(text.split(None, o.min_words))
        return self._short_reason(chars, words) if words < o.min_words else None

    def _short_reason(self, chars: int, words: int) -> Rejection:
        """The rejection of a document left with ``chars`` characters (after strip) and
        ``words`` words, one of them below its minimum (characters are checked first)."""
        o = self.options
        if chars < o.min_chars:
            return Rejection("too_short_after_line_dedup", chars, o.min_chars, "<",
                             "characters left")
        return Rejection("too_short_after_line_dedup", words, o.min_words, "<", "words left")
