"""``select_top_v1``: keep the job-wide top ``fraction`` of documents by a metadata score.

The score is one an earlier step wrote (``perplexity`` from ``kenlm_v1``, ``quality_score``
from ``fasttext_quality_v1``, run with no threshold so they only annotate). Used by the
ablation's equal-selection design, in which every model-based filter keeps the same share
of its input, so arms differ in which documents they keep rather than how many. A top
fraction needs every shard's scores, so this is a :class:`GlobalStep` built on
:mod:`pipeline.text.selection` (scores per shard through the executor, one job-wide cut;
ties at the cut all kept). A document without the score is dropped (``no_score``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from pydantic import Field

from pipeline.core.document import Document
from pipeline.core.step import GlobalStep, StageShard, StepContext, StepOptions

if TYPE_CHECKING:
    from pipeline.execution.executor import Executor


class SelectTopOptions(StepOptions):
    """Options of ``select_top_v1``."""

    field: str = Field(description="metadata key holding the score")
    fraction: float = Field(gt=0.0, le=1.0, description="share of the job's documents to keep")
    lowest: bool = Field(False, description="keep the lowest scores (perplexity) not highest")


class _FieldScorer:
    """Reads the score from a document's metadata (picklable, nothing to load)."""

    def __init__(self, field: str, lowest: bool) -> None:
        self.field, self.lowest = field, lowest

    def setup(self) -> None:
        """Nothing to load."""

    def score(self, doc: Document) -> tuple[float | None, float | None]:
        """Return ``(score, rank)``; ``(None, None)`` for a missing or non-finite score."""
        v = doc.metadata.get(self.field)
        if v is None or not math.isfinite(float(v)):
            return None, None
        return float(v), (-float(v) if self.lowest else float(v))


class SelectTop(GlobalStep):
    """Keeps the job-wide top ``fraction`` of documents by ``field`` (ties at the cut kept)."""

    name = "select_top_v1"
    Options = SelectTopOptions

    def __init__(self, options: StepOptions | None = None) -> None:
        super().__init__(options)
        self._decisions: Any = None

    def prepare(self, shards: list[StageShard], workdir: str, executor: Executor) -> None:
        """Read every shard's scores through ``executor``; save the job-wide cut."""
        from pipeline.text.selection import cut_top_fraction, fingerprint_of

        o = self.options
        fp = fingerprint_of({"step": self.name, **o.model_dump()})
        cut_top_fraction(_FieldScorer(o.field, o.lowest), shards, workdir, fp, o.fraction,
                         executor, f"{self.name} reading")

    def load(self, workdir: str, shard_id: str) -> None:
        """Load this shard's scores and the job-wide cut."""
        from pipeline.text.selection import ShardDecisions

        self._decisions = ShardDecisions.load(workdir, shard_id)

    def run(self, docs: Iterable[Document], ctx: StepContext) -> Iterator[Document]:
        """Yield the documents at or above the cut; drop the rest with a reason."""
        for doc in docs:
            value, selected = self._decisions.lookup(doc)
            if value is None:
                ctx.drop(doc, self.name, "no_score")
            elif selected:
                yield doc
            else:
                ctx.drop(doc, self.name, "below_top_fraction")
