"""Exact document deduplication by a 128-bit hash of the normalised text."""

from __future__ import annotations

from pipeline.dedup.text import document_key


def exact_keep_mask(docs: list[str]) -> list[bool]:
    """Return True for the first document of each group with the same normalised text.

    "Normalised" is :func:`~pipeline.dedup.text.normalize_document`: case folded and
    whitespace collapsed. The first in list order is kept, as the distributed step keeps
    the first in (shard, position) order.
    """
    seen: set[tuple[int, int]] = set()
    keep: list[bool] = []
    for text in docs:
        key = document_key(text)
        keep.append(key not in seen)
        seen.add(key)
    return keep
