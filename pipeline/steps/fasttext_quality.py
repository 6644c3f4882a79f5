"""fastText quality filter: keep documents the classifier finds like the high-quality target.

``fasttext_quality_v1`` scores each document with :class:`pipeline.text.quality.QualityClassifier`
(``quality_score`` = P(hq)) and keeps it when the score is ``>= threshold``; with
``threshold: null`` it keeps everything and only annotates, so an ablation can re-threshold
the written scores without scoring again. With ``selection: sample`` a document is kept with
probability ``sigmoid((quality_score - threshold) / temperature)`` instead (seeded by its id,
:mod:`pipeline.text.sampling`), written as ``quality_keep_probability``. ``fasttext_quality_top_v1``
(:mod:`pipeline.steps.fasttext_quality_top`) keeps the job-wide top fraction by that score.
"""

from __future__ import annotations

from typing import Any, ClassVar

import pyarrow as pa
from pydantic import Field

from pipeline.core.document import Document
from pipeline.core.step import Filter, Rejection, StepOptions, require_file, require_sidecar
from pipeline.text.normalize import NormalizeOptions
from pipeline.text.sampling import SamplingOptions, sample_reject, sampling_fields

METADATA = {"quality_score": pa.float64(), "quality_label": pa.string()}


class FastTextQualityOptions(SamplingOptions):
    """Options of ``fasttext_quality_v1``."""

    keep_key: ClassVar[str] = "quality_keep_probability"

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


def check_model(options: Any) -> None:
    """Raise StepCheckError unless ``options.model`` (and, if required, its sidecar) exists."""
    require_file("model", options.model,
                 "train it with `pipeline classifier train` or fix the path")
    if options.require_meta:
        require_sidecar("model", options.model, "retrain it with `pipeline classifier train`, "
                        "or set require_meta: false to use it anyway")


class _Scoring:
    """Loads the classifier once and scores documents (shared by both steps)."""

    options: Any
    _clf: Any = None
    transient_attrs = ("_clf",)  # a fastText model is not picklable; setup() loads it

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

    def check(self) -> None:
        """Check that the model file (and its sidecar, if required) exists."""
        check_model(self.options)


class FastTextQuality(_Scoring, Filter):
    """Keeps documents with P(hq) >= threshold; metadata ``quality_score``, ``quality_label``."""

    name = "fasttext_quality_v1"
    Options = FastTextQualityOptions
    metadata_fields: ClassVar[dict[str, pa.DataType]] = METADATA

    def __init__(self, options: StepOptions | None = None) -> None:
        super().__init__(options)
        if fields := sampling_fields(self.options):
            self.metadata_fields = {**METADATA, **fields}  # type: ignore[misc]

    def reject_reason(self, doc: Document) -> str | None:
        """Return ``None`` to keep ``doc``, ``"low_quality"`` or ``"no_text"`` to drop it."""
        p = self.score_doc(doc)
        if self.options.threshold is None:
            return None
        if p is None:
            return None if self.options.keep_unscored else "no_text"
        if self.options.selection == "sample":
            return sample_reject(self.options, doc, p, self.options.threshold, True,
                                 "low_quality_sampled_out")
        if p >= self.options.threshold:
            return None
        return Rejection("low_quality", round(p, 4), self.options.threshold, "<",
                         f"P({self.options.label})", "quality_score")

