"""``fasttext_quality_top_v1``: keep the job-wide top ``fraction`` of documents by P(hq).

The score is that of ``fasttext_quality_v1`` (:class:`pipeline.text.quality.QualityClassifier`,
``quality_score`` = P(label)). A top fraction needs every shard's scores, so this is a
:class:`GlobalStep` (a per-shard top fraction would be approximate and depend on how
documents fall into shards): ``prepare`` scores every shard through the executor with
:mod:`pipeline.text.selection` and writes the job-wide cut; each shard task then keeps its
documents at or above it (ties at the cut all kept).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any, ClassVar

import pyarrow as pa
from pydantic import Field

from pipeline.core.document import Document
from pipeline.core.step import GlobalStep, Rejection, StageShard, StepContext, StepOptions
from pipeline.steps.fasttext_quality import (
    METADATA,
    FastTextQuality,
    FastTextQualityOptions,
    check_model,
)
from pipeline.text.normalize import NormalizeOptions

if TYPE_CHECKING:
    from pipeline.execution.executor import Executor


class FastTextQualityTopOptions(StepOptions):
    """Options of ``fasttext_quality_top_v1``."""

    model: str
    fraction: float = Field(gt=0.0, le=1.0, description="share of the job's documents to keep")
    label: str = "hq"
    normalization: NormalizeOptions = Field(default_factory=NormalizeOptions)
    require_meta: bool = True


class _TopScorer:
    """Scores documents for :func:`pipeline.text.selection.score_shards` (picklable).

    Wraps an annotate-only ``fasttext_quality_v1``, so the score and the model loading
    (once per unit, never pickled) are that step's.
    """

    def __init__(self, options: FastTextQualityTopOptions) -> None:
        self.step = FastTextQuality(FastTextQualityOptions(
            model=options.model, threshold=None, label=options.label,
            normalization=options.normalization, require_meta=options.require_meta))

    def setup(self) -> None:
        """Load the classifier; ModelMismatchError if missing, corrupt or mismatching."""
        self.step.setup()

    def score(self, doc: Document) -> tuple[float | None, float | None]:
        """Return ``(P(label), P(label))``; ``(None, None)`` for a document with no tokens."""
        p = self.step.score_doc(doc)
        return p, p


class FastTextQualityTop(GlobalStep):
    """Keeps the job-wide top ``fraction`` of documents by P(hq) (ties at the cut all kept)."""

    name = "fasttext_quality_top_v1"
    Options = FastTextQualityTopOptions
    metadata_fields: ClassVar[dict[str, pa.DataType]] = METADATA

    def __init__(self, options: StepOptions | None = None) -> None:
        super().__init__(options)
        self._decisions: Any = None

    def check(self) -> None:
        """Check that the model file (and its sidecar, if required) exists."""
        check_model(self.options)

    def prepare(self, shards: list[StageShard], workdir: str, executor: Executor) -> None:
        """Score every shard through ``executor``, find the job-wide score of the cut, save both.

        Raises :class:`~pipeline.execution.executor.TaskFailures` when a shard fails.
        """
        from pipeline.text.selection import cut_top_fraction, fingerprint_of

        fp = fingerprint_of({"step": self.name, **self.options.model_dump()})
        cut_top_fraction(_TopScorer(self.options), shards, workdir, fp, self.options.fraction,
                         executor, f"{self.name} scoring")

    def load(self, workdir: str, shard_id: str) -> None:
        """Load this shard's scores and the job-wide cut."""
        from pipeline.text.selection import ShardDecisions

        self._decisions = ShardDecisions.load(workdir, shard_id)

    def run(self, docs: Iterable[Document], ctx: StepContext) -> Iterator[Document]:
        """Annotate each document with its score; yield those at or above the cut."""
        for doc in docs:
            value, selected = self._decisions.lookup(doc)
            doc.metadata["quality_score"] = value
            doc.metadata["quality_label"] = (
                None if value is None else (self.options.label if value >= 0.5 else "other")
            )
            if selected:
                yield doc
            else:
                ctx.drop(doc, self.name, Rejection(
                    "below_top_fraction", value, self._decisions.threshold, "<",
                    f"P({self.options.label}) against the job-wide cut", "quality_score"))
