"""KenLM perplexity filter (CCNet): score each document, keep by threshold or bucket.

``kenlm_v1`` computes the document perplexity under a KenLM model as CCNet does (all lines
scored with ``<s>``/``</s>``, ``10 ** (-sum log10 p / tokens)``, see
:mod:`pipeline.text.kenlm.model`) and records ``perplexity`` and ``bucket``. The bucket is CCNet's:
``head`` below the ``percentile_head`` percentile of the cutoff table's column for
``language``, ``middle`` below ``percentile_tail``, else ``tail``; ``all`` when there is
no cutoff table, no such language or no text. A document is kept when its perplexity is
``<= max_perplexity`` (if set) and its bucket is in ``keep_buckets`` (if set); with both
unset the step only annotates. With ``selection: sample`` the ``max_perplexity`` test keeps a
document with probability ``sigmoid((max_perplexity - perplexity) / temperature)`` instead
(seeded by its id, :mod:`pipeline.text.sampling`) and writes it as
``perplexity_keep_probability``.
"""

from __future__ import annotations

import csv
from typing import Any, ClassVar, Literal

import pyarrow as pa
from pydantic import Field, model_validator

from pipeline.core.document import Document
from pipeline.core.step import Filter, Rejection, StepOptions, require_file, require_sidecar
from pipeline.text.normalize import NormalizeOptions
from pipeline.text.sampling import SamplingOptions, sample_reject, sampling_fields

BUCKETS = ("head", "middle", "tail", "all")


class KenLMOptions(SamplingOptions):
    """Options of ``kenlm_v1`` (``temperature`` is in perplexity units)."""

    threshold_option: ClassVar[str] = "max_perplexity"
    keep_key: ClassVar[str] = "perplexity_keep_probability"

    model: str = Field(description="ARPA or KenLM binary written by `pipeline lm train`")
    max_perplexity: float | None = Field(None, gt=0, description="keep perplexity <= this")
    cutoff_csv: str | None = Field(
        None, description="CCNet percentile table: rows 0..100, one column per language")
    language: str = Field("en", description="column of the cutoff table")
    language_field: str | None = Field(
        None, description="metadata key holding the document language (overrides language)")
    percentile_head: int = Field(30, ge=0, le=100)
    percentile_tail: int = Field(60, ge=0, le=100)
    keep_buckets: list[Literal["head", "middle", "tail", "all"]] | None = Field(
        None, description="buckets to keep; null: all")
    normalization: NormalizeOptions = Field(default_factory=NormalizeOptions)
    require_meta: bool = Field(True, description="refuse a model without .meta.json sidecar")

    @model_validator(mode="after")
    def _check(self) -> KenLMOptions:
        if self.percentile_head > self.percentile_tail:
            raise ValueError("percentile_head must not exceed percentile_tail")
        if self.keep_buckets is not None and self.cutoff_csv is None:
            raise ValueError("keep_buckets needs cutoff_csv (without it every bucket is 'all')")
        return self


def read_cutoffs(path: str, head: int, tail: int) -> dict[str, tuple[float, float]]:
    """Return ``{language: (head cutoff, tail cutoff)}`` from a CCNet cutoff CSV."""
    with open(path, encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f))
    if not rows or len(rows[0]) < 2:
        raise ValueError(f"{path}: not a cutoff table (header ',lang1,lang2,...')")
    langs = rows[0][1:]
    table: dict[int, list[str]] = {}
    for r in rows[1:]:
        if r and r[0].strip():
            table[int(float(r[0]))] = r[1:]
    for pct in (head, tail):
        if pct not in table:
            raise ValueError(f"{path}: no row for percentile {pct}")
    return {lang: (float(table[head][i]), float(table[tail][i])) for i, lang in enumerate(langs)}


def bucket_of(perplexity: float | None, cutoffs: tuple[float, float] | None) -> str:
    """Return CCNet's bucket of a perplexity given ``(head, tail)`` cutoffs."""
    if perplexity is None or cutoffs is None:
        return "all"
    if perplexity < cutoffs[0]:
        return "head"
    if perplexity < cutoffs[1]:
        return "middle"
    return "tail"


class KenLMPerplexity(Filter):
    """Annotates ``perplexity`` and ``bucket``; keeps by ``max_perplexity``/``keep_buckets``."""

    name = "kenlm_v1"
    Options = KenLMOptions
    metadata_fields: ClassVar[dict[str, pa.DataType]] = {
        "perplexity": pa.float64(), "bucket": pa.string()}
    transient_attrs = ("_lm",)  # a kenlm.Model is not picklable

    def __init__(self, options: StepOptions | None = None) -> None:
        super().__init__(options)
        if fields := sampling_fields(self.options):
            self.metadata_fields = {**type(self).metadata_fields, **fields}  # type: ignore[misc]
        self._lm: Any = None
        self._cutoffs: dict[str, tuple[float, float]] = {}

    def setup(self) -> None:
        """Load the model (checked against its sidecar) and the cutoff table."""
        if self._lm is not None:
            return
        from pipeline.text.kenlm.model import LanguageModel

        o = self.options
        self._lm = LanguageModel.load(o.model, o.normalization, o.require_meta)
        if o.cutoff_csv:
            self._cutoffs = read_cutoffs(o.cutoff_csv, o.percentile_head, o.percentile_tail)

    def check(self) -> None:
        """Check that the model (with its sidecar, if required) and the cutoff table exist."""
        o = self.options
        fix = "train it with `pipeline lm train` or fix the path"
        require_file("model", o.model, fix)
        if o.require_meta:
            require_sidecar("model", o.model, "retrain it with `pipeline lm train`, or set "
                            "require_meta: false to use it anyway")
        require_file("cutoff_csv", o.cutoff_csv, "write it with a train_filters job "
                     "(kenlm: cutoffs_from) or fix the path")

    def score(self, doc: Document) -> tuple[float | None, str]:
        """Return the document's perplexity (``None`` without tokens) and its bucket."""
        self.setup()
        pp = self._lm.perplexity(doc.text)
        return pp, bucket_of(pp, self._cutoffs_of(doc))

    def _cutoffs_of(self, doc: Document) -> tuple[float, float] | None:
        """Return the (head, tail) cutoffs for ``doc``'s language, if the table has them."""
        lang = self.options.language
        if self.options.language_field:
            lang = str(doc.metadata.get(self.options.language_field) or lang)
        return self._cutoffs.get(lang)

    def reject_reason(self, doc: Document) -> str | None:
        """Annotate ``doc``; return ``None`` to keep it or why it is dropped."""
        pp, bucket = self.score(doc)
        doc.metadata["perplexity"] = None if pp is None else round(pp, 2)
        doc.metadata["bucket"] = bucket
        o = self.options
        if o.max_perplexity is not None:
            if pp is None:
                return "no_text"
            if o.selection == "sample":
                # on the written (rounded) value, so the metadata alone gives p_keep
                written = doc.metadata["perplexity"]
                out = sample_reject(o, doc, written, o.max_perplexity, False,
                                    "perplexity_sampled_out")
                if out is not None:
                    return out
            elif pp > o.max_perplexity:
                return Rejection("perplexity_too_high", round(pp, 2), o.max_perplexity, ">",
                                 "perplexity", "perplexity")
        if o.keep_buckets is not None and bucket not in o.keep_buckets:
            return _bucket_rejection(pp, bucket, self._cutoffs_of(doc))
        return None


def _bucket_rejection(pp: float | None, bucket: str, cutoffs: tuple[float, float] | None) -> str:
    """Return ``bucket_<bucket>`` with the perplexity and the cutoff that placed it there."""
    reason = f"bucket_{bucket}"
    if pp is None or cutoffs is None:
        return reason
    head, tail = cutoffs
    value = round(pp, 2)
    measure = f"perplexity ({bucket})"
    if bucket == "head":
        return Rejection(reason, value, head, "<", measure, "perplexity")
    if bucket == "tail":
        return Rejection(reason, value, tail, ">=", measure, "perplexity")
    return Rejection(reason, value, [head, tail], "in", measure, "perplexity")
