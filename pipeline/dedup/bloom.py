"""A vectorised Bloom filter for exact deduplication, and its sizing.

Sizing, for ``n`` expected items and a target false-positive rate ``p`` (the optimum for
a filter of ``m`` bits holding ``n`` items):

* bits ``m = ceil(-n ln p / (ln 2)^2)`` (rounded up to whole 64-bit words here);
* hash count ``k = round((m / n) ln 2)`` (at least 1);
* the false-positive rate actually expected for those ``m`` and ``k``:
  ``(1 - exp(-k n / m))^k``.

For p = 1e-6 that is 28.8 bits (3.6 bytes) and 20 hashes per item.

The ``k`` bit positions of a key come from two 64-bit hashes by double hashing (Kirsch and
Mitzenmacher): ``g_i = (h1 + i * h2) mod m`` for ``i < k``, with ``h2`` forced odd. The bit
array is a numpy ``uint64`` array; :meth:`BloomFilter.test_and_set` handles a whole batch
of keys with array operations and gives exactly the answers of inserting them one by one
(a key is "seen" when each of its bits was set before it: by an earlier batch or by an
earlier key of the same batch). A Bloom filter has no false negatives: a key inserted
before is always reported; a new key is reported with probability about ``p``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

U64 = np.uint64
BATCH = 1 << 16  # keys per vectorised step of test_and_set (bounds its temporary memory)
_LN2 = math.log(2.0)


@dataclass(frozen=True)
class BloomSize:
    """The size of a Bloom filter: ``bits`` (a multiple of 64) and ``hashes`` per key."""

    bits: int
    hashes: int

    @property
    def bytes(self) -> int:
        """Memory of the bit array in bytes."""
        return self.bits // 8


def bloom_size(n: int, p: float) -> BloomSize:
    """Return the optimal size for ``n`` items at false-positive rate ``p`` (see module doc).

    ``n`` below 1 counts as 1; ``p`` must be in (0, 1).
    """
    if not 0.0 < p < 1.0:
        raise ValueError(f"false-positive rate must be in (0, 1), got {p}")
    n = max(int(n), 1)
    m = max(64, math.ceil(-n * math.log(p) / _LN2**2))
    m = -(-m // 64) * 64
    k = max(1, round(m / n * _LN2))
    return BloomSize(m, k)


def expected_fp_rate(n: int, bits: int, hashes: int) -> float:
    """Return ``(1 - exp(-k n / m))^k``: the false-positive rate after ``n`` distinct inserts."""
    return (1.0 - math.exp(-hashes * max(n, 0) / bits)) ** hashes


class BloomFilter:
    """A Bloom filter of ``bits`` bits (multiple of 64) probed at ``hashes`` positions per key.

    Keys are pairs of 64-bit hashes ``(h1, h2)`` given as two ``uint64`` arrays (for text,
    the two halves of :func:`pipeline.dedup.text.document_key`).
    """

    def __init__(self, bits: int, hashes: int) -> None:
        if bits < 64 or bits % 64:
            raise ValueError(f"bits must be a positive multiple of 64, got {bits}")
        if hashes < 1:
            raise ValueError(f"hashes must be >= 1, got {hashes}")
        if bits >= 1 << (64 - BATCH.bit_length()):
            raise ValueError(f"{bits} bits is too large for one filter; partition the keys")
        self.bits = bits
        self.hashes = hashes
        self.words = np.zeros(bits // 64, dtype=U64)

    @classmethod
    def for_items(cls, n: int, p: float) -> BloomFilter:
        """Return an empty filter sized by :func:`bloom_size` for ``n`` items at rate ``p``."""
        size = bloom_size(n, p)
        return cls(size.bits, size.hashes)

    @property
    def nbytes(self) -> int:
        """Memory of the bit array in bytes."""
        return self.words.nbytes

    def positions(self, h1: np.ndarray, h2: np.ndarray) -> np.ndarray:
        """Return the bit positions of the keys, shape ``(len(h1), hashes)`` (uint64)."""
        h1 = np.asarray(h1, dtype=U64)
        step = np.asarray(h2, dtype=U64) | U64(1)
        i = np.arange(self.hashes, dtype=U64)
        with np.errstate(over="ignore"):  # arithmetic modulo 2**64 is intended
            g = h1[:, None] + step[:, None] * i[None, :]
        return g % U64(self.bits)

    def _is_set(self, pos: np.ndarray) -> np.ndarray:
        return ((self.words[pos >> U64(6)] >> (pos & U64(63))) & U64(1)).astype(bool)

    def _set_sorted(self, pos: np.ndarray) -> None:
        """Set the bits at ``pos``, which must be sorted (one OR per distinct word)."""
        word = pos >> U64(6)
        mask = U64(1) << (pos & U64(63))
        starts = np.flatnonzero(np.r_[True, word[1:] != word[:-1]])
        self.words[word[starts]] |= np.bitwise_or.reduceat(mask, starts)

    def contains(self, h1: np.ndarray, h2: np.ndarray) -> np.ndarray:
        """Return, per key, whether all its bits are set (True for every key added)."""
        if len(h1) == 0:
            return np.zeros(0, dtype=bool)
        return self._is_set(self.positions(h1, h2)).all(axis=1)

    def add(self, h1: np.ndarray, h2: np.ndarray) -> None:
        """Set the bits of every key."""
        if len(h1):
            self._set_sorted(np.sort(self.positions(h1, h2).ravel()))

    def test_and_set(self, h1: np.ndarray, h2: np.ndarray) -> np.ndarray:
        """Insert the keys in order; return, per key, whether it was (apparently) seen before.

        Equal to calling ``contains`` then ``add`` on each key in turn: a key counts as
        seen when every one of its bits was set by an earlier batch or by a key earlier in
        this batch, so the first of two equal keys is new and the second is seen.
        """
        out = np.empty(len(h1), dtype=bool)
        for lo in range(0, len(h1), BATCH):
            out[lo : lo + BATCH] = self._test_and_set(h1[lo : lo + BATCH], h2[lo : lo + BATCH])
        return out

    def _test_and_set(self, h1: np.ndarray, h2: np.ndarray) -> np.ndarray:
        n = len(h1)
        if n == 0:
            return np.zeros(0, dtype=bool)
        # One sort of (position, key) packed in a uint64 orders the probes by position and,
        # within a position, by key; a plain sort is much cheaper than an argsort.
        shift = U64(max(1, (n - 1).bit_length()))
        key = np.repeat(np.arange(n, dtype=U64), self.hashes)
        packed = (self.positions(h1, h2).ravel() << shift) | key
        packed.sort()
        pos = packed >> shift
        key = (packed & ((U64(1) << shift) - U64(1))).astype(np.int64)
        head = np.r_[True, pos[1:] != pos[:-1]]
        first = key[np.flatnonzero(head)[np.cumsum(head) - 1]]  # first key setting the bit
        missing = ~(self._is_set(pos) | (first < key))
        seen = np.bincount(key[missing], minlength=n) == 0
        self._set_sorted(pos)
        return seen
