"""``dedup_bloom_v1``: exact deduplication of documents or paragraphs with Bloom filters.

``mode: document`` drops a document whose normalised text (case folded, whitespace
collapsed: :func:`pipeline.dedup.text.normalize_document`) repeats an earlier document's,
with reason ``bloom_duplicate``. ``mode: paragraph`` (dolma's paragraph dedup) removes
from each document the paragraphs (lines) whose normalised text appeared earlier, in this
or an earlier document, and drops a document left with only blank lines
(``all_paragraphs_duplicate``); ``bloom_paragraphs_removed`` counts the removed ones.
"Earlier" is (shard, position, paragraph) order across every shard, so the first copy
survives, as in ``dedup_exact_v1``.

Memory is a Bloom filter instead of the keys themselves: for ``n`` items (option
``expected_items``, else the number of keys hashed) at false-positive rate ``p``
(``fp_rate``) it has ``m = ceil(-n ln p / (ln 2)^2)`` bits and ``k = round((m / n) ln 2)``
hashes, split into ``ceil(m / 8 / max_filter_bytes)`` hash-range partitions, one task
each. A false positive drops a unique document or paragraph with probability about
``p``; a duplicate is never missed. See :mod:`pipeline.dedup.phases.bloom`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Literal

import pyarrow as pa
from pydantic import Field

from pipeline.core.document import Document
from pipeline.core.step import GlobalStep, StageShard, StepContext, StepOptions

if TYPE_CHECKING:
    from pipeline.execution.executor import Executor


class BloomDedupOptions(StepOptions):
    """Options of ``dedup_bloom_v1``."""

    mode: Literal["document", "paragraph"] = "document"
    fp_rate: float = Field(1e-6, gt=0.0, lt=1.0, description="target false-positive rate p")
    expected_items: int | None = Field(
        None, ge=1, description="n for sizing; default: the number of keys hashed")
    max_filter_bytes: int = Field(1 << 30, ge=1 << 10,
                                  description="largest Bloom filter one task holds")
    max_map_tasks: int = Field(4096, ge=1, description="map tasks (each reads a run of shards)")


class BloomDedup(GlobalStep):
    """Exact document or paragraph deduplication across all shards with Bloom filters."""

    name = "dedup_bloom_v1"
    Options = BloomDedupOptions
    metadata_fields = {"bloom_paragraphs_removed": pa.int32()}

    def __init__(self, options: StepOptions | None = None) -> None:
        super().__init__(options)
        self._decisions = None

    def prepare(self, shards: list[StageShard], workdir: str, executor: Executor) -> None:
        """Test-and-set every key across ``shards`` through ``executor``; resumable under
        ``workdir``."""
        from pipeline.dedup.phases.bloom import BloomConfig, prepare_bloom

        o = self.options
        prepare_bloom(shards, workdir, BloomConfig(
            mode=o.mode, fp_rate=o.fp_rate, expected_items=o.expected_items,
            max_filter_bytes=o.max_filter_bytes, max_map_tasks=o.max_map_tasks), executor)

    def load(self, workdir: str, shard_id: str) -> None:
        """Load which documents (or paragraphs) of ``shard_id`` repeat earlier ones."""
        from pipeline.dedup.phases.bloom import load_bloom

        self._decisions = load_bloom(workdir, shard_id)

    def seek(self, position: int) -> None:
        """Match repeated ids from document ``position`` of the shard on (see
        :meth:`GlobalStep.seek`)."""
        if self._decisions is not None:
            self._decisions.seek(position)

    def run(self, docs: Iterable[Document], ctx: StepContext) -> Iterator[Document]:
        """Yield documents without their repeated paragraphs (paragraph mode) or drop
        repeated documents (document mode)."""
        from pipeline.dedup.phases.bloom import paragraphs

        if self._decisions is None:
            raise RuntimeError(f"{self.name}: load() must be called before run()")
        paragraph_mode = self.options.mode == "paragraph"
        for doc in docs:
            dups = self._decisions.get(doc.id)
            if not paragraph_mode:
                if dups is None:
                    yield doc
                else:
                    ctx.drop(doc, self.name, "bloom_duplicate")
                continue
            doc.metadata["bloom_paragraphs_removed"] = len(dups or ())
            if dups:
                ctx.stats.counters["paragraphs_removed"] += len(dups)
                drop = set(dups)
                doc.text = "\n".join(p for i, p in enumerate(paragraphs(doc.text))
                                     if i not in drop)
            if doc.text.strip():
                yield doc
            else:
                ctx.drop(doc, self.name, "all_paragraphs_duplicate")
