"""``toxicity_v1``: score documents (or each of their lines) for toxicity; drop over a threshold.

The model (:mod:`pipeline.text.toxicity`) is by default the linear SVM that the PyPI package
``alt-profanity-check`` ships, trained on human-labelled toxic and offensive comments
(Jigsaw, Davidson et al.); ``model: PATH`` takes a fastText ``.bin`` in dolma's Jigsaw
taggers' format instead, scored on ``label`` (``toxic``, ``nsfw``; ``__label__`` optional).

``mode: document`` scores the whole text: ``toxicity_score`` = P(toxic | text).
``mode: line`` scores each non-blank line, as dolma's sentence taggers score sentences
(lines, not sentences: extracted web text breaks at block boundaries). ``toxicity_score``
is the highest line score and ``toxic_line_fraction`` the share of scored lines at or over
``line_threshold`` (0.4 by default: the score over which dolma counts and cuts a toxic span).

Decisions, in this order, all on the written metadata:

1. ``toxicity_score >= threshold`` drops the document (``toxic``); in line mode that is
   "some line scores at least ``threshold``". ``threshold: null`` only annotates.
   ``selection: sample`` keeps it instead with probability
   ``sigmoid((threshold - toxicity_score) / temperature)`` (:mod:`pipeline.text.sampling`),
   written as ``toxicity_keep_probability``.
2. line mode, ``max_toxic_line_fraction``: a larger ``toxic_line_fraction`` drops it
   (``too_many_toxic_lines``).
3. line mode, ``drop_toxic_lines: true``: the toxic lines are cut out of the kept document
   (dolma's span removal, with ``threshold: null`` for dolma's exact recipe); a document
   with nothing but blank lines left is dropped (``all_lines_toxic``). The scores stay
   those of the text before the cut.

A document with no text to score keeps a null score and is kept (counted ``unscored``).

Caveats (measured in ``benchmarks/toxicity_bench.py``): the default model is English-only
(run it after ``langid_v2``: on webmix's German pages 4% of lines score >= 0.5, as "die"
is an English insult), and on long documents the document score is diluted (it flags 1% of
webmix spam where line mode flags 9%), while line mode's maximum over many short lines
picks up the model's bias on identity words in fragments ("Black women", "Gay 2006":
5.5% of Wikipedia articles have a line >= 0.5).
"""

from __future__ import annotations

import importlib.util
from typing import Any, ClassVar, Literal

import pyarrow as pa
from pydantic import Field, model_validator

from pipeline.core.document import Document
from pipeline.core.step import Filter, Rejection, StepCheckError, StepOptions, require_file
from pipeline.steps.c4 import SAMPLE_LINE_CHARS, SAMPLE_LINES
from pipeline.text.normalize import NormalizeOptions
from pipeline.text.sampling import SamplingOptions, sample_reject, sampling_fields
from pipeline.text.toxicity import MODULE, PACKAGE, RAW

LINE_FIELDS = {"toxic_line_fraction": pa.float64()}


class ToxicityOptions(SamplingOptions):
    """Options of ``toxicity_v1``."""

    keep_key: ClassVar[str] = "toxicity_keep_probability"

    model: str | None = Field(
        None, description="fastText .bin with __label__toxic-style labels (dolma's Jigsaw "
        "format); null: the alt-profanity-check model")
    label: str = Field("toxic", description="fastText model only: the label scored")
    normalization: NormalizeOptions = Field(
        default_factory=lambda: RAW, description="fastText model only: text normalisation "
        "before scoring (default: none, as dolma's taggers)")
    mode: Literal["document", "line"] = "document"
    threshold: float | None = Field(
        0.5, ge=0.0, le=1.0, description="drop when toxicity_score >= this; null: keep")
    line_threshold: float = Field(
        0.4, ge=0.0, le=1.0, description="line mode: a line scoring >= this is toxic")
    max_toxic_line_fraction: float | None = Field(
        None, ge=0.0, le=1.0, description="line mode: drop when toxic_line_fraction > this")
    drop_toxic_lines: bool = Field(False, description="line mode: cut toxic lines out")

    @model_validator(mode="after")
    def _check(self) -> ToxicityOptions:
        # an option that would do nothing is refused (a value other than its default)
        fields = type(self).model_fields
        def changed(key: str) -> bool:
            return getattr(self, key) != fields[key].get_default(call_default_factory=True)
        if self.mode == "document":
            for key in ("line_threshold", "max_toxic_line_fraction", "drop_toxic_lines"):
                if changed(key):
                    raise ValueError(f"{key} needs mode: line")
        if self.model is None:
            for key in ("label", "normalization"):
                if changed(key):
                    raise ValueError(f"{key} applies to a fastText model (set model: PATH)")
        return self


class Toxicity(Filter):
    """Writes ``toxicity_score`` (and ``toxic_line_fraction`` in line mode); drops toxic text."""

    name = "toxicity_v1"
    Options = ToxicityOptions
    #: every configuration writes these; line mode and sampling add theirs (see __init__)
    metadata_fields: ClassVar[dict[str, pa.DataType]] = {"toxicity_score": pa.float64()}
    transient_attrs = ("_model",)  # a fastText model is not picklable; setup() loads it

    def __init__(self, options: StepOptions | None = None) -> None:
        super().__init__(options)
        o = self.options
        fields = dict(type(self).metadata_fields)
        if o.mode == "line":
            fields.update(LINE_FIELDS)
        fields.update(sampling_fields(o))
        # what this configuration writes: no always-null columns in document mode
        self.metadata_fields = fields  # type: ignore[misc]
        self._model: Any = None

    def setup(self) -> None:
        """Load the model once per worker; ModelMismatchError if missing or unusable."""
        if self._model is None:
            from pipeline.text.toxicity import load_model

            o = self.options
            self._model = load_model(o.model, o.label, o.normalization)

    def check(self) -> None:
        """Check that the fastText model file exists, or that the default model is installed."""
        o = self.options
        if o.model is not None:
            require_file("model", o.model, "give a fastText .bin with __label__toxic-style "
                         "labels, or model: null for the alt-profanity-check model")
        elif importlib.util.find_spec(MODULE) is None:
            raise StepCheckError("model", f"the default model needs the {PACKAGE} package "
                                 f"(pip install '{PACKAGE}==1.9.1'), or set model: to a "
                                 "fastText .bin")

    def reject_reason(self, doc: Document) -> str | None:
        """Annotate ``doc``; return ``None`` to keep it (maybe without its toxic lines) or why
        it is dropped."""
        self.setup()
        o = self.options
        if o.mode == "document":
            score = self._model.scores([doc.text])[0]
            doc.metadata["toxicity_score"] = score
            if score is None:
                self.count("unscored")
                return None
            return self._decide(doc, score)
        from pipeline.text.toxicity import line_scores

        lines, scores = line_scores(self._model, doc.text)
        scored = [s for s in scores if s is not None]
        toxic = [s is not None and s >= o.line_threshold for s in scores]
        fraction = sum(toxic) / len(scored) if scored else None
        score = max(scored) if scored else None
        doc.metadata["toxicity_score"] = score
        doc.metadata["toxic_line_fraction"] = fraction
        if score is None or fraction is None:
            self.count("unscored")
            return None
        reason = self._decide(doc, score)
        if reason is not None:
            return reason
        if o.max_toxic_line_fraction is not None and fraction > o.max_toxic_line_fraction:
            return Rejection("too_many_toxic_lines", round(fraction, 4),
                             o.max_toxic_line_fraction, ">", "share of toxic lines",
                             "toxic_line_fraction")
        if o.drop_toxic_lines and any(toxic):
            kept = [line for line, t in zip(lines, toxic, strict=True) if not t]
            if all(not line.strip() for line in kept):
                return "all_lines_toxic"
            self.count("toxic_lines_removed", sum(toxic))
            if self.wants_sample(doc):
                self.record_sample(doc, line_trace(lines, scores, toxic))
            doc.text = "\n".join(kept)
        return None

    def _decide(self, doc: Document, score: float) -> str | None:
        """Apply ``threshold`` (or sampling around it) to the document's score."""
        o = self.options
        if o.threshold is None:
            return None
        if o.selection == "sample":
            return sample_reject(o, doc, score, o.threshold, False, "toxic_sampled_out")
        if score < o.threshold:
            return None
        return Rejection("toxic", round(score, 4), o.threshold, ">=", "P(toxic)",
                         "toxicity_score")


def line_trace(lines: list[str], scores: list[float | None], toxic: list[bool]) -> dict:
    """Return a change sample as ``c4_v1`` writes one: each line with why it was cut (or
    None), the first :data:`SAMPLE_LINES`, each cut short."""
    rows = [[line[:SAMPLE_LINE_CHARS], f"toxicity {s:.2f}" if t else None]
            for line, s, t in zip(lines, scores, toxic, strict=True)]
    return {"lines": rows[:SAMPLE_LINES], "lines_total": len(rows)}
