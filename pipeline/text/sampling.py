"""Stochastic selection by score: keep a document with a probability that its score sets.

Score-based filters (``kenlm_v1``, ``fasttext_quality_v1``, ``toxicity_v1``) keep a
document when its score passes a threshold (``selection: threshold``, the default). With
``selection: sample`` they keep it with probability

    p_keep = sigmoid((score - threshold) / temperature)     (higher score is better)
    p_keep = sigmoid((threshold - score) / temperature)     (lower is better: perplexity,
                                                            toxicity)

so a document at the threshold is kept half the time, and ``temperature`` (in the score's
own units) is how far from the threshold the probability moves from 0.27 to 0.73; as it
goes to 0 the rule becomes the threshold rule. The coin is a hash of the seed and the
document id (:func:`uniform`), not a random generator: a rerun, a resumed run or another
cut of the shard into chunks keeps exactly the same documents. A document is kept when
``uniform(id, seed) < p_keep``. The step writes p_keep as metadata under its own key
(``perplexity_keep_probability``, ``quality_keep_probability``,
``toxicity_keep_probability``), so two sampled steps in one job keep both.

Job-wide selection (keep the top fraction of all shards) is :mod:`pipeline.text.selection`.
"""

from __future__ import annotations

import hashlib
import math
from typing import ClassVar, Literal

import pyarrow as pa
from pydantic import Field, model_validator

from pipeline.core.document import Document
from pipeline.core.step import Rejection, StepOptions


class SamplingOptions(StepOptions):
    """The ``selection``, ``temperature`` and ``seed`` options of a score-based filter.

    A subclass names the option holding its threshold in ``threshold_option`` (sampling
    needs it set, and a temperature) and the metadata key of p_keep in ``keep_key``.
    """

    threshold_option: ClassVar[str] = "threshold"
    keep_key: ClassVar[str] = "keep_probability"

    selection: Literal["threshold", "sample"] = Field(
        "threshold", description="threshold: keep by the threshold; sample: keep with "
        "probability sigmoid(±(score - threshold) / temperature), seeded by the document id")
    temperature: float | None = Field(
        None, gt=0, description="selection: sample only: the logistic's scale, in the score's "
        "units (e.g. 0.1 for a probability)")
    seed: int = Field(0, description="selection: sample only: another seed keeps other documents")

    @model_validator(mode="after")
    def _check_sampling(self) -> SamplingOptions:
        if self.selection == "sample":
            if self.temperature is None:
                raise ValueError("selection: sample needs temperature (the logistic's scale in "
                                 "score units, e.g. 0.1 for a probability)")
            if getattr(self, self.threshold_option) is None:
                raise ValueError(f"selection: sample needs {self.threshold_option} (the score "
                                 "kept with probability 0.5)")
        return self


def sampling_fields(options: SamplingOptions) -> dict[str, pa.DataType]:
    """Return the metadata a step with these options adds for sampling (none by threshold)."""
    return {options.keep_key: pa.float64()} if options.selection == "sample" else {}


def keep_probability(score: float, threshold: float, temperature: float,
                     higher_is_better: bool) -> float:
    """Return ``sigmoid(±(score - threshold) / temperature)`` (+ when higher is better)."""
    x = (score - threshold) / temperature
    if not higher_is_better:
        x = -x
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)  # no overflow for very negative x
    return e / (1.0 + e)


def uniform(doc_id: str, seed: int = 0) -> float:
    """Return a number in [0, 1) fixed by ``seed`` and ``doc_id`` (64 bits of BLAKE2b)."""
    h = hashlib.blake2b(f"{seed}\0{doc_id}".encode("utf-8", "surrogatepass"), digest_size=8)
    return int.from_bytes(h.digest(), "big") / 2.0**64


def sample_keep(doc_id: str, score: float, threshold: float, temperature: float, seed: int,
                higher_is_better: bool) -> tuple[bool, float]:
    """Return ``(keep, p_keep)`` for a document: kept when ``uniform(doc_id, seed) < p_keep``."""
    p = keep_probability(score, threshold, temperature, higher_is_better)
    return uniform(doc_id, seed) < p, p


def sample_reject(options: SamplingOptions, doc: Document, score: float, threshold: float,
                  higher_is_better: bool, reason: str) -> Rejection | None:
    """Decide ``doc`` (scored ``score``) by ``selection: sample``: ``None`` keeps it, else a
    :class:`~pipeline.core.step.Rejection` ``reason`` saying ``keep probability < coin``.

    Writes p_keep into ``doc.metadata[options.keep_key]`` either way (:func:`sample_keep`).
    """
    if options.temperature is None:
        raise ValueError("selection: sample needs temperature")
    p = keep_probability(score, threshold, options.temperature, higher_is_better)
    doc.metadata[options.keep_key] = p
    coin = uniform(doc.id, options.seed)
    if coin < p:
        return None
    return Rejection(reason, round(p, 4), round(coin, 4), "<", "keep probability (vs coin)",
                     options.keep_key)
