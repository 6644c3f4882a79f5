"""The BPE merge loop over unique pre-tokens, with incremental pair counts and a lazy heap.

Only the words that contain the merged pair are revisited, and in them only the pairs next
to each merge site change. A pair (a, b) is keyed by the integer `a << 21 | b`. The heap
holds `(-count, inverted bytes of a, inverted bytes of b, key)`; an entry may be stale (its
count an upper bound of the true count): a stale top is corrected and pushed back when
popped. A pair's count only grows in the step that creates its newer token, which is when
it is pushed, so every stored count stays an upper bound and the valid top is the maximum.

`tokenizer/_bpe.c` is the same loop in C (built by `setup.py` when a compiler is there; it
is optional). `bpe_merges` uses it when it imports and falls back to this module's loop
otherwise; both order pairs the same way, so they give identical merges.
"""

from __future__ import annotations

import heapq
from collections.abc import Mapping

from tqdm import tqdm

try:
    from tokenizer import _bpe as _native
except ImportError:  # the optional extension was not built: pure-Python loop
    _native = None

SHIFT = 21
MASK = (1 << SHIFT) - 1


def _inverted(token: bytes) -> tuple[int, ...]:
    """Key whose ascending order is the descending order of the byte strings."""
    return (*(255 - b for b in token), 256)


class _PairStats:
    """Unique words with their counts, pair counts and the words where each pair occurs."""

    def __init__(self, word_counts: Mapping[bytes, int]) -> None:
        self.words: list[list[int]] = []
        self.counts: list[int] = []
        for word in sorted(word_counts):
            if len(word) > 1:
                self.words.append(list(word))
                self.counts.append(word_counts[word])
        self.pair_counts: dict[int, int] = {}
        self.pair_words: dict[int, list[int]] = {}
        pair_counts = self.pair_counts
        pair_words = self.pair_words
        get = pair_counts.get
        for wi, word in enumerate(self.words):
            c = self.counts[wi]
            prev = word[0] << SHIFT
            for t in word[1:]:
                key = prev | t
                old = get(key)
                if old is None:
                    pair_counts[key] = c
                    pair_words[key] = [wi]
                else:
                    pair_counts[key] = old + c
                    lst = pair_words[key]
                    if lst[-1] != wi:
                        lst.append(wi)
                prev = t << SHIFT
        self.last_visit = [-1] * len(self.words)

    def merge(self, a: int, b: int, new_id: int, step: int) -> set[int]:
        """Replace every (a, b) by `new_id` in the words containing it; update the counts.

        Returns the keys of the pairs that contain `new_id` (the only counts that grew).
        Only the pairs next to each merge site change: (x, a) becomes (x, new) and (b, y)
        becomes (new, y); two adjacent sites make (new, new).
        """
        target = a << SHIFT | b
        created: set[int] = set()
        pair_counts = self.pair_counts
        pair_words = self.pair_words
        words = self.words
        counts = self.counts
        last_visit = self.last_visit
        pair_counts.pop(target, None)
        get = pair_counts.get
        new_left = new_id << SHIFT
        b_left = b << SHIFT

        for wi in pair_words.pop(target, ()):
            if last_visit[wi] == step:
                continue
            last_visit[wi] = step
            word = words[wi]
            n = len(word)
            try:
                i = word.index(a)
                while word[i + 1] != b:
                    i = word.index(a, i + 1)
            except (ValueError, IndexError):
                continue
            c = counts[wi]
            out = word[:i]
            prev_merged = False
            while True:
                # Here word[i] == a and word[i + 1] == b.
                if out:
                    if not prev_merged:
                        key = word[i - 1] << SHIFT | a
                        if key != target:
                            value = get(key, 0) - c
                            if value:
                                pair_counts[key] = value
                            else:
                                del pair_counts[key]
                    key = out[-1] << SHIFT | new_id
                    pair_counts[key] = get(key, 0) + c
                    created.add(key)
                    lst = pair_words.get(key)
                    if lst is None:
                        pair_words[key] = [wi]
                    elif lst[-1] != wi:
                        lst.append(wi)
                out.append(new_id)
                j = i + 2
                if j >= n:
                    break
                nxt = word[j]
                key = b_left | nxt
                if key != target:
                    value = get(key, 0) - c
                    if value:
                        pair_counts[key] = value
                    else:
                        del pair_counts[key]
                # Next merge site at or after j (n if none).
                try:
                    k = word.index(a, j)
                    while word[k + 1] != b:
                        k = word.index(a, k + 1)
                except (ValueError, IndexError):
                    k = n
                if k == j:
                    prev_merged = True
                else:
                    key = new_left | nxt
                    pair_counts[key] = get(key, 0) + c
                    created.add(key)
                    lst = pair_words.get(key)
                    if lst is None:
                        pair_words[key] = [wi]
                    elif lst[-1] != wi:
                        lst.append(wi)
                    out.extend(word[j:k])
                    prev_merged = False
                    if k == n:
                        break
                i = k
            words[wi] = out
        return created


def native_available() -> bool:
    """Whether the compiled merge loop (`tokenizer._bpe`) was built and imports."""
    return _native is not None


def bpe_merges(
    word_counts: Mapping[bytes, int],
    num_merges: int,
    progress: bool = True,
    native: bool | None = None,
) -> tuple[list[bytes], list[tuple[int, int]]]:
    """Run up to `num_merges` BPE merges over `word_counts` ({pre-token bytes: count}).

    The most frequent pair is merged at each step; ties go to the lexicographically greater
    pair of byte strings. Returns the token byte strings (ids 0-255 are the single bytes, id
    256 + i is the token of merge i) and the merges as pairs of those ids, in order. Stops
    early when no pair is left.

    `native`: None uses the C loop when it is built, else Python; False forces Python; True
    requires the C loop (RuntimeError if it is not built). Both give identical merges.
    """
    if num_merges + 256 > MASK:
        raise ValueError(f"at most {MASK - 256} merges are supported")
    if native is None:
        native = _native is not None
    if native:
        if _native is None:
            raise RuntimeError("the native merge loop (tokenizer._bpe) is not built")
        return _native_merges(word_counts, num_merges, progress)
    return _python_merges(word_counts, num_merges, progress)


def _native_merges(
    word_counts: Mapping[bytes, int], num_merges: int, progress: bool
) -> tuple[list[bytes], list[tuple[int, int]]]:
    """`bpe_merges` through the C loop; tokens are rebuilt here from the merges."""
    words = [w for w in word_counts if len(w) > 1]
    counts = [word_counts[w] for w in words]
    bar = tqdm(total=num_merges, desc="merge", unit="merge", disable=not progress)
    try:
        merges = _native.merge_loop(
            words, counts, num_merges, (lambda n: bar.update(n - bar.n)) if progress else None
        )
    finally:
        bar.close()
    tokens: list[bytes] = [bytes([b]) for b in range(256)]
    for a, b in merges:
        tokens.append(tokens[a] + tokens[b])
    return tokens, merges


def _python_merges(
    word_counts: Mapping[bytes, int], num_merges: int, progress: bool
) -> tuple[list[bytes], list[tuple[int, int]]]:
    """`bpe_merges` in pure Python (the fallback when the extension is not built)."""
    tokens: list[bytes] = [bytes([b]) for b in range(256)]
    inv: list[tuple[int, ...]] = [_inverted(t) for t in tokens]
    stats = _PairStats(word_counts)
    pair_counts = stats.pair_counts
    heap = [(-c, inv[k >> SHIFT], inv[k & MASK], k) for k, c in pair_counts.items()]
    heapq.heapify(heap)
    merges: list[tuple[int, int]] = []
    bar = tqdm(total=num_merges, desc="merge", unit="merge", disable=not progress)
    try:
        while len(merges) < num_merges and heap:
            neg, _, _, key = heap[0]
            current = pair_counts.get(key, 0)
            if current != -neg:
                if current > 0:
                    heapq.heapreplace(heap, (-current, heap[0][1], heap[0][2], key))
                else:
                    heapq.heappop(heap)
                continue
            heapq.heappop(heap)
            a, b = key >> SHIFT, key & MASK
            new_id = len(tokens)
            tokens.append(tokens[a] + tokens[b])
            inv.append(_inverted(tokens[-1]))
            merges.append((a, b))
            for k in stats.merge(a, b, new_id, len(merges)):
                c = pair_counts.get(k, 0)
                if c > 0:
                    heapq.heappush(heap, (-c, inv[k >> SHIFT], inv[k & MASK], k))
            if len(merges) % 100 == 0:
                bar.update(100)
        bar.update(len(merges) - bar.n)
    finally:
        bar.close()
    return tokens, merges
