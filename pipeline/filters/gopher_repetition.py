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

Speed: words are split once; n-grams are tuples of words (their string hashes are
cached), counted with ``Counter``; the first occurrence of each n-gram is found with one
``dict`` built in C. The duplicated-n-gram coverage can only shrink as n grows (a
repeated (n+1)-gram consists of two repeated n-grams), so once a fraction is within every
larger n's threshold the larger n are not computed.
"""

from __future__ import annotations

import re
from collections import Counter
from functools import cache
from itertools import accumulate, compress
from operator import ne

from pydantic import Field, field_validator

from pipeline.step import StepOptions

_PARAGRAPH_SPLIT_RE = re.compile(r"\n\s*\n")

DEFAULT_TOP_N_GRAMS: dict[int, float] = {2: 0.20, 3: 0.18, 4: 0.16}
DEFAULT_DUP_N_GRAMS: dict[int, float] = {
    5: 0.15, 6: 0.14, 7: 0.13, 8: 0.12, 9: 0.11, 10: 0.10,
}


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


def _n_grams(words: list[str], n: int) -> list[tuple[str, ...]]:
    return list(zip(*(words[i:] for i in range(n)), strict=False))


def top_n_gram_chars(words: list[str], n: int) -> int:
    """Return the characters of the most frequent word n-gram times its count (0 if none)."""
    if len(words) < n:
        return 0
    gram, count = Counter(_n_grams(words, n)).most_common(1)[0]
    return count * sum(map(len, gram))


def duplicate_n_gram_chars(words: list[str], n: int, prefix: list[int] | None = None) -> int:
    """Return the characters of the words covered by repeated occurrences of word n-grams.

    An occurrence is repeated when the same n-gram appeared earlier. A word covered by
    several (overlapping) repeated n-grams counts once. ``prefix`` (cumulative word
    lengths starting with 0) may be passed to share it between calls.
    """
    grams = _n_grams(words, n)
    m = len(grams)
    if m < 2:
        return 0
    # Built from the end, so each n-gram maps to the index of its first occurrence.
    first = dict(zip(reversed(grams), range(m - 1, -1, -1), strict=True))
    if len(first) == m:
        return 0
    if prefix is None:
        prefix = [0, *accumulate(map(len, words))]
    repeated = compress(range(m), map(ne, map(first.__getitem__, grams), range(m)))
    covered = 0
    start = end = -1
    for i in repeated:
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

    def reject_reason(self, text: str) -> str | None:
        """Return ``None`` when ``text`` passes, else the first failing rule's reason.

        Reasons: ``gopher_dup_para_frac``, ``gopher_dup_para_char_frac``,
        ``gopher_dup_line_frac``, ``gopher_dup_line_char_frac``, ``gopher_top_{n}_gram``,
        ``gopher_dup_{n}_gram``.
        """
        o = self.options
        n_chars = len(text)
        if n_chars == 0:
            return None

        if o.dup_para_frac is not None or o.dup_para_char_frac is not None:
            paragraphs = list(filter(None, map(str.strip, _PARAGRAPH_SPLIT_RE.split(text))))
            if paragraphs:
                dups, dup_chars = duplicate_stats(paragraphs)
                if o.dup_para_frac is not None and dups / len(paragraphs) > o.dup_para_frac:
                    return "gopher_dup_para_frac"
                if o.dup_para_char_frac is not None and dup_chars / n_chars > o.dup_para_char_frac:
                    return "gopher_dup_para_char_frac"

        if o.dup_line_frac is not None or o.dup_line_char_frac is not None:
            lines = list(filter(None, map(str.strip, text.split("\n"))))
            if lines:
                dups, dup_chars = duplicate_stats(lines)
                if o.dup_line_frac is not None and dups / len(lines) > o.dup_line_frac:
                    return "gopher_dup_line_frac"
                if o.dup_line_char_frac is not None and dup_chars / n_chars > o.dup_line_char_frac:
                    return "gopher_dup_line_char_frac"

        if not self._top and not self._dup:
            return None
        words = text.split()
        word_chars = sum(map(len, words))
        if word_chars == 0:
            return None

        for n, max_frac in self._top:
            if top_n_gram_chars(words, n) / word_chars > max_frac:
                return f"gopher_top_{n}_gram"

        prefix: list[int] | None = None
        for i, (n, max_frac) in enumerate(self._dup):
            if prefix is None:
                prefix = [0, *accumulate(map(len, words))]
            frac = duplicate_n_gram_chars(words, n, prefix) / word_chars
            if frac > max_frac:
                return f"gopher_dup_{n}_gram"
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
