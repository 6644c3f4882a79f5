"""Evaluation-set decontamination: word n-grams shared with evaluation text.

Text is normalised and cut into words as the MinHash shingles are
(:class:`pipeline.dedup.text.ShingleHasher`): a word is a run of letters, digits and
non-ASCII bytes, ASCII is lower-cased, punctuation and whitespace only separate words. Each
window of ``n`` consecutive words (default 13, as GPT-3's decontamination) is one 64-bit
hash that depends on the words and their order only; a text with fewer than ``n`` words
has no n-gram (so it is never matched, and an evaluation item that short contributes
nothing). With 64-bit hashes, a query matches an index of ``E`` n-grams by accident with
probability ``E / 2**64`` (1e-13 for a million evaluation n-grams).

The index is a sorted ``uint64`` array of distinct evaluation n-gram hashes with, beside
it, the evaluation set each came from (the first set listing it), cut into hash ranges
(:class:`NgramIndex`); membership is a binary search per n-gram.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from pipeline.dedup.text import U64, ShingleHasher

DEFAULT_NGRAM = 13
NO_SET = -1


def ngram_hashes(texts: Sequence[str], hasher: ShingleHasher, skip_numeric: bool = False
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Return (hashes of every full ``hasher.ngram``-word window of ``texts`` in order, count
    per text); a text shorter than ``ngram`` words has none. ``skip_numeric`` leaves out
    windows whose words are all ASCII digits (reference lists, pagination, table indexes:
    "1 2 3 ... 13" says nothing about an evaluation item)."""
    n = hasher.ngram
    if skip_numeric:
        words, wcounts, numeric = hasher.word_hashes_numeric(texts)
    else:
        words, wcounts = hasher.word_hashes(texts)
    hashes, counts = hasher.shingles_from_words(words, wcounts)
    short = wcounts < n
    if short.any():  # the hasher gives such texts one shingle of all their words: drop it
        doc = np.repeat(np.arange(len(texts)), counts)
        hashes = hashes[~short[doc]]
        counts = np.where(short, 0, counts)
    if skip_numeric and len(hashes):
        # window starts in the hasher's order: every word with n - 1 more in its text
        doc = np.repeat(np.arange(len(texts)), wcounts)
        starts = np.flatnonzero(doc[: len(doc) - n + 1] == doc[n - 1 :])
        digits = np.zeros(len(words) + 1, dtype=np.int64)
        np.cumsum(numeric, out=digits[1:])
        keep = digits[starts + n] - digits[starts] < n
        counts = np.bincount(doc[starts][keep], minlength=len(texts)).astype(np.int64)
        hashes = hashes[keep]
    return hashes, counts


def sorted_unique(values: np.ndarray) -> np.ndarray:
    """Return the distinct values, sorted (by sorting: numpy 2.4's hash-based ``np.unique``
    is 60x slower on uint64)."""
    values = np.sort(values)
    return values[np.r_[True, values[1:] != values[:-1]]] if len(values) else values


def partition_bounds(partitions: int) -> np.ndarray:
    """Return the ``partitions - 1`` hash values where partitions 1.. start (equal ranges)."""
    return np.array([(p << 64) // partitions for p in range(1, partitions)], dtype=U64)


@dataclass
class Contamination:
    """One text's matches: distinct n-grams found in the index, and the set with most of them."""

    ngrams: int
    eval_set: int


class NgramIndex:
    """Distinct evaluation n-gram hashes in hash-range partitions, each sorted, with set ids.

    ``hashes[p]`` (sorted ``uint64``) and ``sets[p]`` (``uint16``: which evaluation set)
    hold the n-grams of partition ``p``; partition ``p`` covers
    ``[p * 2**64 / P, (p + 1) * 2**64 / P)``. The arrays may be memory maps.
    """

    def __init__(self, hashes: Sequence[np.ndarray], sets: Sequence[np.ndarray]) -> None:
        if len(hashes) != len(sets) or not hashes:
            raise ValueError("an index needs as many set arrays as hash arrays, at least one")
        self.hashes = list(hashes)
        self.sets = list(sets)
        self._bounds = partition_bounds(len(hashes))

    @classmethod
    def from_sets(cls, ngram_sets: Sequence[np.ndarray]) -> NgramIndex:
        """Build a one-partition index in memory from each evaluation set's n-gram hashes."""
        h = np.concatenate([np.asarray(a, dtype=U64) for a in ngram_sets] or [np.zeros(0, U64)])
        s = np.repeat(np.arange(len(ngram_sets), dtype=np.uint16), [len(a) for a in ngram_sets])
        h, s = unique_first_set(h, s)
        return cls([h], [s])

    def __len__(self) -> int:
        return int(sum(len(h) for h in self.hashes))

    def lookup(self, hashes: np.ndarray) -> np.ndarray:
        """Return, per query hash, the id of the evaluation set holding it, or ``NO_SET``."""
        hashes = np.asarray(hashes, dtype=U64)
        out = np.full(len(hashes), NO_SET, dtype=np.int32)
        part = np.searchsorted(self._bounds, hashes, side="right")
        for p in range(len(self.hashes)):
            sel = np.flatnonzero(part == p) if len(self.hashes) > 1 else np.arange(len(hashes))
            table = self.hashes[p]
            if len(table) == 0:
                continue
            q = hashes[sel]
            i = np.minimum(np.searchsorted(table, q), len(table) - 1)
            hit = table[i] == q
            out[sel[hit]] = np.asarray(self.sets[p])[i[hit]]
        return out

    def contamination(self, texts: Sequence[str], hasher: ShingleHasher) -> list[Contamination]:
        """Return each text's count of distinct n-grams in the index and the set matched most
        (``NO_SET`` when none; ties go to the lower set id)."""
        hashes, counts = ngram_hashes(texts, hasher)
        found = self.lookup(hashes)
        doc = np.repeat(np.arange(len(texts)), counts)
        hit = found != NO_SET
        result = [Contamination(0, NO_SET) for _ in texts]
        if not hit.any():
            return result
        # distinct (text, n-gram) pairs, then per text the number per set
        d, h, st = doc[hit], hashes[hit], found[hit]
        order = np.lexsort((h, d))
        d, h, st = d[order], h[order], st[order]
        first = np.r_[True, (d[1:] != d[:-1]) | (h[1:] != h[:-1])]
        per_doc: dict[int, dict[int, int]] = {}
        for di, si in zip(d[first].tolist(), st[first].tolist(), strict=True):
            sets = per_doc.setdefault(di, {})
            sets[si] = sets.get(si, 0) + 1
        for d, sets in per_doc.items():
            best = min(sets, key=lambda s: (-sets[s], s))
            result[d] = Contamination(sum(sets.values()), best)
        return result


def unique_first_set(hashes: np.ndarray, sets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return the distinct ``hashes`` (sorted) each with the lowest set id that has it."""
    order = np.lexsort((sets, hashes))
    h, s = hashes[order], sets[order]
    first = np.r_[True, h[1:] != h[:-1]] if len(h) else np.zeros(0, dtype=bool)
    return h[first], s[first]
