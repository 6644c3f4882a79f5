"""``control_shuffle_words_v1``: a planted control with a known harm, for ablations.

Replaces a seeded ``fraction`` of documents with a copy of themselves whose words are
shuffled: the same words (so the same unigram statistics and about the same token count),
none of the order a language model learns from. An ablation arm that adds this step to
another arm's steps must come out worse than that arm; if the report cannot see that, the
design cannot see effects of that size either (``pipeline ablate`` checks it).

Which documents are shuffled, and how, depends only on ``seed`` and the document id, so the
choice is the same however the job is sharded or resumed. Words are split on whitespace and
joined by single spaces (line breaks go with the order).
"""

from __future__ import annotations

import hashlib
from typing import ClassVar

import numpy as np
import pyarrow as pa
from pydantic import Field

from pipeline.core.document import Document
from pipeline.core.step import Mapper, StepContext, StepOptions


class ShuffleWordsOptions(StepOptions):
    """Which share of documents to shuffle."""

    fraction: float = Field(0.5, ge=0.0, le=1.0, description="share of documents shuffled")
    seed: int = 0


def _unit(seed: int, doc_id: str, what: bytes) -> int:
    digest = hashlib.blake2b(what + seed.to_bytes(8, "little", signed=True)
                             + doc_id.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def shuffled_words(text: str, seed: int, doc_id: str) -> str:
    """``text``'s whitespace-separated words in a seeded random order, joined by spaces."""
    words = text.split()
    order = np.random.Generator(np.random.PCG64(_unit(seed, doc_id, b"order"))).permutation(
        len(words))
    return " ".join(words[i] for i in order)


class ShuffleWords(Mapper):
    """Shuffles the words of a seeded ``fraction`` of documents; ``control_shuffled`` says
    which (counter ``control_docs_shuffled``)."""

    name = "control_shuffle_words_v1"
    Options: ClassVar[type[StepOptions]] = ShuffleWordsOptions
    metadata_fields: ClassVar[dict[str, pa.DataType]] = {"control_shuffled": pa.bool_()}

    def chosen(self, doc: Document) -> bool:
        """Whether ``doc`` is one of the shuffled fraction (by seed and document id)."""
        o = self.options
        return _unit(o.seed, doc.id, b"pick") < o.fraction * 2.0**64  # type: ignore[attr-defined]

    def apply(self, doc: Document, ctx: StepContext) -> Document:
        """Shuffle ``doc``'s words if it is chosen; mark it either way; return it."""
        pick = self.chosen(doc)
        if pick:
            doc.text = shuffled_words(doc.text, self.options.seed, doc.id)  # type: ignore[attr-defined]
            ctx.stats.counters["control_docs_shuffled"] += 1
        doc.metadata["control_shuffled"] = pick
        return doc
