"""``decontaminate_v1``: drop training documents that share a word n-gram with evaluation sets.

``evals`` lists evaluation files (JSONL or Parquet, paths or globs; the text is read from
``text_field``). A document with at least ``min_matches`` distinct ``ngram``-word n-grams
(default 13; case folded, punctuation ignored: :mod:`pipeline.text.decontamination`) that
also occur in an evaluation set is dropped with reason ``contaminated`` (or only annotated,
``annotate_only: true``). Every document gets ``contaminated_ngrams`` (distinct shared
n-grams) and ``contamination_eval`` (the ``evals`` entry sharing the most, null if none).

The n-gram index is built once, before the shards run, as a global step
(:mod:`pipeline.dedup.phases.decontaminate`: one task per evaluation file, then one per
hash range); each shard task memory-maps it and looks its documents' n-grams up with
binary searches.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from itertools import islice
from typing import TYPE_CHECKING

import pyarrow as pa
from pydantic import Field

from pipeline.core.document import Document
from pipeline.core.step import GlobalStep, StageShard, StepCheckError, StepContext, StepOptions
from pipeline.text.decontamination import DEFAULT_NGRAM, NO_SET

if TYPE_CHECKING:
    from pipeline.execution.executor import Executor

BATCH = 256  # documents hashed and looked up at once


class DecontaminateOptions(StepOptions):
    """Options of ``decontaminate_v1``."""

    evals: list[str] = Field(min_length=1, description="evaluation files (JSONL/Parquet, globs)")
    ngram: int = Field(DEFAULT_NGRAM, ge=1, description="words per n-gram")
    min_matches: int = Field(1, ge=1, description="shared n-grams that make a document contaminated")
    annotate_only: bool = Field(False, description="write the metadata, drop nothing")
    text_field: str = Field("text", min_length=1, description="text field of the eval files")
    max_partition_bytes: int = Field(256 << 20, ge=1 << 10,
                                     description="largest index partition (10 bytes per n-gram)")


class Decontaminate(GlobalStep):
    """Drops (or annotates) documents sharing n-grams with evaluation sets."""

    name = "decontaminate_v1"
    Options = DecontaminateOptions
    metadata_fields = {"contaminated_ngrams": pa.int32(), "contamination_eval": pa.string()}
    transient_attrs = ("_index", "_hasher")

    def __init__(self, options: StepOptions | None = None) -> None:
        super().__init__(options)
        self._workdir: str | None = None
        self._index = None
        self._names: list[str] = []
        self._hasher = None

    def check(self) -> None:
        """Every ``evals`` entry must name at least one file of a format the readers know."""
        from pipeline.core.step import require_match
        from pipeline.dedup.phases.decontaminate import eval_files
        from pipeline.io.readers import detect_format

        fix = "give JSONL or Parquet evaluation files (paths or globs)"
        for i, pattern in enumerate(self.options.evals):
            require_match(f"evals[{i}]", pattern, fix)
            for _, path in eval_files([pattern]):
                try:
                    detect_format(path)
                except ValueError as e:
                    raise StepCheckError(f"evals[{i}]", str(e)) from None

    def setup(self) -> None:
        """Memory-map the index again after unpickling (when :meth:`load` ran before)."""
        from pipeline.dedup.text import ShingleHasher

        self._hasher = ShingleHasher(self.options.ngram)
        if self._workdir is not None and self._index is None:
            self.load(self._workdir, "")

    def prepare(self, shards: list[StageShard], workdir: str, executor: Executor) -> None:
        """Build the n-gram index of the evaluation sets under ``workdir`` through
        ``executor`` (the shards are not read: the index depends on the evaluation sets only)."""
        from pipeline.dedup.phases.decontaminate import IndexConfig, prepare_index

        o = self.options
        prepare_index(workdir, IndexConfig(evals=list(o.evals), ngram=o.ngram,
                                           text_field=o.text_field,
                                           max_partition_bytes=o.max_partition_bytes), executor)

    def load(self, workdir: str, shard_id: str) -> None:
        """Memory-map the index (the same for every shard)."""
        from pipeline.dedup.phases.decontaminate import load_index

        self._workdir = workdir
        self._index, self._names = load_index(workdir)

    def run(self, docs: Iterable[Document], ctx: StepContext) -> Iterator[Document]:
        """Annotate every document; drop the contaminated ones unless ``annotate_only``."""
        if self._index is None:
            raise RuntimeError(f"{self.name}: load() must be called before run()")
        if self._hasher is None:
            self.setup()
        o = self.options
        it = iter(docs)
        while batch := list(islice(it, BATCH)):
            found = self._index.contamination([d.text for d in batch], self._hasher)
            for doc, c in zip(batch, found, strict=True):
                name = self._names[c.eval_set] if c.eval_set != NO_SET else None
                doc.metadata["contaminated_ngrams"] = c.ngrams
                doc.metadata["contamination_eval"] = name
                if c.ngrams < o.min_matches:
                    yield doc
                    continue
                ctx.stats.counters["contaminated"] += 1
                ctx.stats.counters[f"contaminated:{name}"] += 1
                if o.annotate_only:
                    yield doc
                else:
                    ctx.drop(doc, self.name, "contaminated")
