"""fastText quality filter: keep documents the classifier finds like the high-quality target.

``fasttext_quality_v1`` scores each document with :class:`pipeline.text.quality.QualityClassifier`
(``quality_score`` = P(hq)) and keeps it when the score is ``>= threshold``; with
``threshold: null`` it keeps everything and only annotates, so an ablation can re-threshold
the written scores without scoring again.

``fasttext_quality_top_v1`` keeps the top ``fraction`` of the whole job by that score. A
top fraction needs every shard's scores, so it is a :class:`GlobalStep` (a per-shard top
fraction would be approximate and depend on how documents fall into shards).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from typing import Any, ClassVar

import pyarrow as pa
from pydantic import Field

from pipeline.core.document import Document
from pipeline.text.normalize import NormalizeOptions
from pipeline.core.step import Filter, GlobalStep, StageShard, StepContext, StepOptions

METADATA = {"quality_score": pa.float64(), "quality_label": pa.string()}


class FastTextQualityOptions(StepOptions):
    """Options of ``fasttext_quality_v1``."""

    model: str = Field(description="fastText model written by `pipeline classifier train`")
    threshold: float | None = Field(
        0.5, ge=0.0, le=1.0, description="keep P(hq) >= threshold; null: only annotate"
    )
    label: str = Field("hq", description="the label whose probability is the score")
    normalization: NormalizeOptions = Field(default_factory=NormalizeOptions)
    require_meta: bool = Field(True, description="refuse a model without .meta.json sidecar")
    keep_unscored: bool = Field(
        False, description="keep documents with no text to score (score null) when filtering"
    )


class _Scoring:
    """Loads the classifier once and scores documents (shared by both steps)."""

    options: Any
    _clf: Any = None

    def setup(self) -> None:
        """Load the classifier; ModelMismatchError if missing, corrupt or mismatching."""
        if self._clf is None:
            from pipeline.text.quality import QualityClassifier

            self._clf = QualityClassifier.load(
                self.options.model, self.options.normalization, self.options.require_meta
            )
            if self.options.label not in self._clf.labels:
                from pipeline.text.model_meta import ModelMismatchError

                raise ModelMismatchError(
                    f"model {self.options.model!r} has labels {self._clf.labels}, "
                    f"not {self.options.label!r}"
                )

    def score_doc(self, doc: Document) -> float | None:
        """Return P(label | doc) and annotate ``doc``; ``None`` when it has no tokens."""
        self.setup()
        p = self._clf.probability(doc.text, self.options.label)
        doc.metadata["quality_score"] = p
        if p is None:
            doc.metadata["quality_label"] = None
        else:
            doc.metadata["quality_label"] = self.options.label if p >= 0.5 else "other"
        return p

    def __getstate__(self) -> dict[str, Any]:
        # the fastText model is not picklable; workers load their own in setup()
        return {k: v for k, v in self.__dict__.items() if k != "_clf"}


class FastTextQuality(_Scoring, Filter):
    """Keeps documents with P(hq) >= threshold; metadata ``quality_score``, ``quality_label``."""

    name = "fasttext_quality_v1"
    Options = FastTextQualityOptions
    metadata_fields: ClassVar[dict[str, pa.DataType]] = METADATA

    def reject_reason(self, doc: Document) -> str | None:
        """Return ``None`` to keep ``doc``, ``"low_quality"`` or ``"no_text"`` to drop it."""
        p = self.score_doc(doc)
        if self.options.threshold is None:
            return None
        if p is None:
            return None if self.options.keep_unscored else "no_text"
        return None if p >= self.options.threshold else "low_quality"


class FastTextQualityTopOptions(StepOptions):
    """Options of ``fasttext_quality_top_v1``."""

    model: str
    fraction: float = Field(gt=0.0, le=1.0, description="share of the job's documents to keep")
    label: str = "hq"
    normalization: NormalizeOptions = Field(default_factory=NormalizeOptions)
    require_meta: bool = True


class _TopScorer(_Scoring):
    def __init__(self, options: FastTextQualityTopOptions) -> None:
        self.options = options
        self._clf = None

    def score(self, doc: Document) -> tuple[float | None, float | None]:
        p = self.score_doc(doc)
        return p, p


class FastTextQualityTop(GlobalStep):
    """Keeps the job-wide top ``fraction`` of documents by P(hq) (ties at the cut all kept)."""

    name = "fasttext_quality_top_v1"
    Options = FastTextQualityTopOptions
    metadata_fields: ClassVar[dict[str, pa.DataType]] = METADATA

    def __init__(self, options: StepOptions | None = None) -> None:
        super().__init__(options)
        self._decisions: Any = None

    def prepare(self, shards: list[StageShard], workdir: str) -> None:
        """Score every shard in Ray tasks, find the job-wide score of the cut, save both."""
        from pipeline.text.selection import (
            fingerprint_of,
            global_threshold,
            read_decision,
            score_shards,
            write_decision,
        )

        fp = fingerprint_of({"step": self.name, **self.options.model_dump()})
        old = read_decision(workdir)
        if old is not None and old.get("fingerprint") == fp:
            return
        # per-shard lists need at most fraction * shard size each; a shard count is unknown
        # until scored, so ask for a generous bound and cut after the total is known
        tops, total = score_shards(_TopScorer(self.options), shards, workdir, fp,
                                   k=2**62, desc=f"{self.name} scoring")
        k = math.ceil(self.options.fraction * total)
        write_decision(workdir, {"fingerprint": fp, "threshold": global_threshold(tops, k),
                                 "k": k, "total": total})

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
                ctx.drop(doc, self.name, "below_top_fraction")
