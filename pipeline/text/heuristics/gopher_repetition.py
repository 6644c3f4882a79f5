"""Gopher repetition rules (Rae et al. 2021, appendix A.1.1, Table A1).

A document is removed when any of these exceeds its threshold:

==========================================  =========
duplicate paragraph fraction                0.30
duplicate paragraph character fraction      0.20
duplicate line fraction                     0.30
duplicate line character fraction           0.20
top 2- / 3- / 4-gram character fraction     0.20 / 0.18 / 0.16
duplicate 5- ... 10-gram character fraction 0.15 / 0.14 / 0.13 / 0.12 / 0.11 / 0.10
==========================================  =========

Definitions:

* paragraphs are separated by blank lines, lines by ``\\n``; both are compared after
  stripping surrounding whitespace, and blank ones are ignored. A *duplicate* is every
  occurrence after the first (as in datatrove), so ``A A B C`` has one duplicate line in
  four. The character fractions divide the duplicates' characters by ``len(text)``.
* n-grams are over whitespace-separated words. Character fractions divide word characters
  (spaces excluded) by the document's word characters.
* top n-gram: the most frequent n-gram's characters times its count.
* duplicate n-grams: the words covered by some occurrence of an n-gram that already
  occurred earlier in the document; each covered word counts once however many
  overlapping duplicate n-grams cover it (the paper's "taking care not to count
  characters that occur in overlapping n-grams more than once").

Speed: words are split once; :class:`NGramIndex` gives every n-gram the position of its
first occurrence (one ``dict.setdefault`` pass in C per n, keyed by short tuples of the
smaller n's indexes), and those ints are what ``Counter`` counts. The top n-gram of a
larger n is only counted when its count bound (the smaller n's top count) times the
longest n-gram could pass the threshold. The duplicated-n-gram coverage can only shrink
as n grows (a repeated (n+1)-gram consists of two repeated n-grams), so once a fraction
is within every larger n's threshold the larger n are not computed.
"""

from __future__ import annotations

import re
from collections import Counter
from functools import cache
from itertools import accumulate, compress, count
from operator import ne, sub

from pydantic import Field, field_validator

from pipeline.core.step import Rejection, StepOptions

_PARAGRAPH_SPLIT_RE = re.compile(r"\n\s*\n")

DEFAULT_TOP_N_GRAMS: dict[int, float] = {2: 0.20, 3: 0.18, 4: 0.16}
DEFAULT_DUP_N_GRAMS: dict[int, float] = {
    5: 0.15, 6: 0.14, 7: 0.13, 8: 0.12, 9: 0.11, 10: 0.10,
}



_UNIT_NAMES = {"para": "paragraphs", "line": "lines"}


def _duplicate_rejection(unit: str, parts: list[str], n_chars: int, frac: float | None,
                         char_frac: float | None) -> Rejection | None:
    """Gopher's duplicate-``unit`` rules (share of duplicates, share of their characters)."""
    items = list(filter(None, map(str.strip, parts)))
    if not items:
        return None
    dups, dup_chars = duplicate_stats(items)
    name = _UNIT_NAMES[unit]
    if frac is not None and dups / len(items) > frac:
        return Rejection(f"gopher_dup_{unit}_frac", round(dups / len(items), 4), frac, ">",
                         f"duplicate {name}")
    if char_frac is not None and dup_chars / n_chars > char_frac:
        return Rejection(f"gopher_dup_{unit}_char_frac", round(dup_chars / n_chars, 4),
                         char_frac, ">", f"characters in duplicate {name}")
    return None

class GopherRepetitionOptions(StepOptions):
    """Thresholds of the Gopher repetition rules; ``None`` (or a missing n) disables one."""

    dup_para_frac: float | None = Field(0.30, ge=0, le=1)
    dup_para_char_frac: float | None = Field(0.20, ge=0, le=1)
    dup_line_frac: float | None = Field(0.30, ge=0, le=1)
    dup_line_char_frac: float | None = Field(0.20, ge=0, le=1)
    top_n_grams: dict[int, float] = Field(
        default_factory=lambda: dict(DEFAULT_TOP_N_GRAMS),
        description="n -> max character fraction of the most frequent n-gram",
    )
    dup_n_grams: dict[int, float] = Field(
        default_factory=lambda: dict(DEFAULT_DUP_N_GRAMS),
        description="n -> max character fraction covered by repeated n-grams",
    )

    @field_validator("top_n_grams", "dup_n_grams")
    @classmethod
    def _check_n_grams(cls, v: dict[int, float]) -> dict[int, float]:
        for n, frac in v.items():
            if n < 1:
                raise ValueError(f"n-gram size must be at least 1, got {n}")
            if not 0 <= frac <= 1:
                raise ValueError(f"threshold for n={n} must be in [0, 1], got {frac}")
        return v


def duplicate_stats(items: list[str]) -> tuple[int, int]:
    """Return (number of repeated occurrences, their characters) among ``items``.

    The first occurrence of each distinct item is not a repeat.
    """
    unique = set(items)
    return len(items) - len(unique), sum(map(len, items)) - sum(map(len, unique))


class NGramIndex:
    """First-occurrence indexes of a document's word n-grams, built level by level.

    ``first(n)[i]`` is the position of the first occurrence of the n-gram starting at
    word ``i``. Level ``n`` is keyed by tuples of already-built levels (``5 = 2 + 2 + 1``),
    so no n-gram tuple is longer than a few ints, and each level is one ``dict.setdefault``
    pass in C.
    """

    def __init__(self, words: list[str]) -> None:
        self.words = words
        self.prefix = [0, *accumulate(map(len, words))]  # prefix[i]: chars of words[:i]
        # keys that identify the n-grams of each built level: the words, then first indexes
        self._keys: dict[int, list] = {1: words}
        self._first: dict[int, list[int]] = {}
        self._distinct: dict[int, int] = {}

    def first(self, n: int) -> list[int]:
        """Return the first-occurrence index of every n-gram (empty if too few words)."""
        level = self._first.get(n)
        if level is not None:
            return level
        m = len(self.words) - n + 1
        if m <= 0:
            level, distinct = [], 0
        else:
            built = sorted((k for k in self._keys if k < n), reverse=True) or [1]
            columns, offset = [], 0
            while offset < n:
                size = next(k for k in built if k <= n - offset)
                columns.append(self._keys[size][offset : offset + m])
                offset += size
            seen: dict = {}
            keys = columns[0] if len(columns) == 1 else zip(*columns, strict=True)
            level = list(map(seen.setdefault, keys, count()))
            distinct = len(seen)
        self._first[n] = self._keys[n] = level
        self._distinct[n] = distinct
        return level

    def distinct(self, n: int) -> int:
        """Return the number of distinct n-grams."""
        self.first(n)
        return self._distinct[n]

    def chars(self, start: int, n: int) -> int:
        """Return the characters (spaces excluded) of the n words from ``start``."""
        return self.prefix[start + n] - self.prefix[start]


def top_n_gram_chars(index: NGramIndex, n: int) -> int:
    """Return the characters of the most frequent n-gram times its count (0 if none)."""
    first = index.first(n)
    if not first:
        return 0
    start, count_ = Counter(first).most_common(1)[0]
    return count_ * index.chars(start, n)


def duplicate_n_gram_chars(index: NGramIndex, n: int) -> int:
    """Return the characters of the words covered by repeated occurrences of n-grams.

    An occurrence is repeated when the same n-gram appeared earlier. A word covered by
    several (overlapping) repeated n-grams counts once.
    """
    first = index.first(n)
    m = len(first)
    if index.distinct(n) == m:
        return 0
    prefix = index.prefix
    covered = 0
    start = end = -1
    for i in compress(range(m), map(ne, first, range(m))):
        if i <= end:
            end = i + n
        else:
            if end >= 0:
                covered += prefix[end] - prefix[start]
            start, end = i, i + n
    if end >= 0:
        covered += prefix[end] - prefix[start]
    return covered


class GopherRepetition:
    """The Gopher repetition rules with fixed thresholds."""

    def __init__(self, options: GopherRepetitionOptions | None = None) -> None:
        self.options = options if options is not None else GopherRepetitionOptions()
        self._top = sorted(self.options.top_n_grams.items())
        self._dup = sorted(self.options.dup_n_grams.items())
        # For early exit: the smallest threshold among the n-gram sizes after each one.
        self._dup_rest_min = [
            min((t for _, t in self._dup[i + 1 :]), default=1.0) for i in range(len(self._dup))
        ]

    def reject_reason(self, text: str) -> Rejection | None:
        """Return ``None`` when ``text`` passes, else the first failing rule's reason.

        The reason is a :class:`~pipeline.core.step.Rejection` carrying the measured
        fraction and the threshold it exceeded.

        Reasons: ``gopher_dup_para_frac``, ``gopher_dup_para_char_frac``,
        ``gopher_dup_line_frac``, ``gopher_dup_line_char_frac``, ``gopher_top_{n}_gram``,
        ``gopher_dup_{n}_gram``.
        """
        o = self.options
        n_chars = len(text)
        if n_chars == 0:
            return None

        for unit, parts, frac, char_frac in (
            ("para", lambda: _PARAGRAPH_SPLIT_RE.split(text), o.dup_para_frac, o.dup_para_char_frac),
            ("line", lambda: text.split("\n"), o.dup_line_frac, o.dup_line_char_frac),
        ):
            if frac is None and char_frac is None:
                continue
            rejection = _duplicate_rejection(unit, parts(), n_chars, frac, char_frac)
            if rejection is not None:
                return rejection

        if not self._top and not self._dup:
            return None
        words = text.split()
        index = NGramIndex(words)
        word_chars = index.prefix[-1]
        if word_chars == 0:
            return None

        prefix = index.prefix
        top_count: int | None = None  # count of the top n-gram of a smaller n, if computed
        for n, max_frac in self._top:
            if len(words) < n:
                break
            if top_count is not None:
                # Skip when even the longest n-gram at that count stays within the threshold:
                # an n-gram occurs at most as often as the top (n-1)-gram.
                longest = max(map(sub, prefix[n:], prefix[: len(prefix) - n]))
                if top_count * longest / word_chars <= max_frac:
                    continue
            start, top_count = Counter(index.first(n)).most_common(1)[0]
            frac = top_count * index.chars(start, n) / word_chars
            if frac > max_frac:
                return Rejection(f"gopher_top_{n}_gram", round(frac, 4), max_frac, ">",
                                 f"characters in the top {n}-gram")

        for i, (n, max_frac) in enumerate(self._dup):
            frac = duplicate_n_gram_chars(index, n) / word_chars
            if frac > max_frac:
                return Rejection(f"gopher_dup_{n}_gram", round(frac, 4), max_frac, ">",
                                 f"characters in duplicate {n}-grams")
            if frac <= self._dup_rest_min[i]:
                break  # larger n cover no more words, and their thresholds are not lower
        return None


@cache
def _default() -> GopherRepetition:
    return GopherRepetition()


def gopher_repetition_reason(text: str) -> str | None:
    """Return why ``text`` fails the Gopher repetition rules at the paper's thresholds, or None."""
    return _default().reject_reason(text)


def gopher_repetition(text: str) -> bool:
    """Return True when ``text`` passes every Gopher repetition rule at the paper's thresholds."""
    return _default().reject_reason(text) is None
