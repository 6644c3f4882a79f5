"""CCNet-style line deduplication: drop lines that recur across the corpus.

A line is compared by :func:`~pipeline.dedup.text.normalize_line` (case folded, digits
as ``0``, punctuation dropped, whitespace collapsed). Every occurrence counts, across all
documents; a line whose normalised form occurs at least ``min_count`` times is removed
from every document that has it. Lines that normalise to nothing (blank lines,
punctuation-only rules) are never counted or removed.

Normalising and hashing run in the native extension :mod:`pipeline.dedup.native_lines` when
it is built (the same hashes, several times faster; both the counting and the removing
phase go through :func:`nonempty_line_hashes` / :func:`line_hashes` here) and in Python,
:func:`reference_line_hashes`, otherwise.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from pipeline.dedup import native_lines
from pipeline.dedup.text import line_hash, normalize_line


def reference_line_hashes(text: str) -> list[int | None]:
    """Return the hash of each line of ``text`` (``None`` for lines that normalise to nothing),
    computed in Python: the definition the native path must equal."""
    out: list[int | None] = []
    for line in text.split("\n"):
        norm = normalize_line(line)
        out.append(line_hash(norm) if norm else None)
    return out


def line_hashes(text: str) -> list[int | None]:
    """Return the hash of each line of ``text`` (``None`` for lines that normalise to nothing)."""
    if not native_lines.available():
        return reference_line_hashes(text)
    hashes, nonempty = native_lines.every_line_hash(text)
    return [h if ok else None for h, ok in zip(hashes.tolist(), nonempty.tolist(), strict=True)]


def nonempty_line_hashes(text: str) -> np.ndarray:
    """Return the int64 hashes of the lines of ``text`` that normalise to something, in order."""
    if native_lines.available():
        return native_lines.nonempty_line_hashes(text)
    return np.fromiter((h for h in reference_line_hashes(text) if h is not None), dtype=np.int64)


def column_line_hashes(texts: pa.Array) -> np.ndarray:
    """Return :func:`nonempty_line_hashes` of every string of an Arrow string column,
    concatenated: natively over the column's buffers when the extension has that kernel,
    else (or for malformed UTF-8, which Python then refuses as reading a Document would)
    string by string."""
    if native_lines.can_hash_columns():
        try:
            return native_lines.column_line_hashes(texts)
        except ValueError:
            pass
    parts = [nonempty_line_hashes(t) for t in texts.to_pylist()]
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)


def count_line_hashes(texts: Iterable[str]) -> tuple[np.ndarray, np.ndarray]:
    """Return (distinct line hashes as sorted int64, occurrences of each) over ``texts``."""
    parts = [nonempty_line_hashes(t) for t in texts]
    allh = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)
    uniq, counts = np.unique(allh, return_counts=True)
    return uniq, counts.astype(np.int64)


@dataclass
class LineRemoval:
    """What removing frequent lines did to one document."""

    text: str
    lines_removed: int
    chars_removed: int


def remove_lines(text: str, frequent: Collection[int]) -> LineRemoval:
    """Return ``text`` without its lines whose hash is in ``frequent``, and what was removed."""
    if not frequent:
        return LineRemoval(text, 0, 0)
    hashes = line_hashes(text)
    if isinstance(frequent, set | frozenset) and frequent.isdisjoint(hashes):
        return LineRemoval(text, 0, 0)  # the common case, without a Python loop over lines
    lines = text.split("\n")
    kept: list[str] = []
    removed = chars = 0
    for line, h in zip(lines, hashes, strict=True):
        if h is not None and h in frequent:
            removed += 1
            chars += len(line) + 1
        else:
            kept.append(line)
    if not removed:
        return LineRemoval(text, 0, 0)
    return LineRemoval("\n".join(kept).strip("\n"), removed, chars)


def frequent_line_hashes(texts: Sequence[str], min_count: int = 2) -> set[int]:
    """Return the hashes of normalised lines that occur at least ``min_count`` times."""
    counter: Counter[int] = Counter()
    for t in texts:
        counter.update(nonempty_line_hashes(t).tolist())
    return {h for h, c in counter.items() if c >= min_count}


def exact_line_dedup(docs: list[str], min_count: int = 2) -> list[str]:
    """Return ``docs`` with every line that occurs ``min_count`` or more times removed.

    Occurrences are counted across all documents (and repeats within one document); every
    occurrence of such a line is removed, including the first. The result has one text per
    input document, possibly empty; dropping documents left too short is the step's job.
    """
    frequent = frequent_line_hashes(docs, min_count)
    return [remove_lines(t, frequent).text for t in docs]
