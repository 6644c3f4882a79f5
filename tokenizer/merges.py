"""The BPE merge loop over unique pre-tokens, with incremental pair counts and a lazy heap.

Only the words that contain the merged pair are revisited. The heap holds
`(-count, inverted bytes of left, inverted bytes of right, left, right)`; entries may be
stale (their count is an upper bound of the true count), and a stale top is corrected and
pushed back when popped. A pair's count only grows in the step that creates its newer
token, which is when it is pushed, so every stored count stays an upper bound.
"""

from __future__ import annotations

import heapq
from collections.abc import Mapping

from tqdm import tqdm

Pair = tuple[int, int]


def _inverted(token: bytes) -> tuple[int, ...]:
    """Key whose ascending order is the descending order of the byte strings."""
    return (*(255 - b for b in token), 256)


def bpe_merges(
    word_counts: Mapping[bytes, int], num_merges: int, progress: bool = True
) -> tuple[list[bytes], list[Pair]]:
    """Run up to `num_merges` BPE merges over `word_counts` ({pre-token bytes: count}).

    The most frequent pair is merged at each step; ties go to the lexicographically greater
    pair of byte strings. Returns the token byte strings (ids 0-255 are the single bytes, id
    256 + i is the token of merge i) and the merges as pairs of those ids, in order. Stops
    early when no pair is left.
    """
    tokens: list[bytes] = [bytes([b]) for b in range(256)]
    inv: list[tuple[int, ...]] = [_inverted(t) for t in tokens]
    words: list[list[int]] = []
    counts: list[int] = []
    for word in sorted(word_counts):
        if len(word) > 1:
            words.append(list(word))
            counts.append(word_counts[word])

    pair_counts: dict[Pair, int] = {}
    pair_words: dict[Pair, list[int]] = {}
    for wi, (word, c) in enumerate(zip(words, counts, strict=True)):
        seen: set[Pair] = set()
        for pair in zip(word, word[1:], strict=False):
            pair_counts[pair] = pair_counts.get(pair, 0) + c
            if pair not in seen:
                seen.add(pair)
                lst = pair_words.get(pair)
                if lst is None:
                    pair_words[pair] = [wi]
                else:
                    lst.append(wi)

    heap = [(-c, inv[a], inv[b], a, b) for (a, b), c in pair_counts.items()]
    heapq.heapify(heap)
    last_visit = [-1] * len(words)
    merges: list[Pair] = []
    bar = tqdm(total=num_merges, desc="merge", unit="merge", disable=not progress)
    try:
        while len(merges) < num_merges and heap:
            neg, _, _, a, b = heap[0]
            current = pair_counts.get((a, b), 0)
            if current != -neg:
                if current > 0:
                    heapq.heapreplace(heap, (-current, inv[a], inv[b], a, b))
                else:
                    heapq.heappop(heap)
                continue
            heapq.heappop(heap)
            new_id = len(tokens)
            tokens.append(tokens[a] + tokens[b])
            inv.append(_inverted(tokens[-1]))
            merges.append((a, b))
            step = len(merges)
            created = _apply_merge(
                a, b, new_id, step, words, counts, pair_counts, pair_words, last_visit
            )
            for pair in created:
                c = pair_counts.get(pair, 0)
                if c > 0:
                    heapq.heappush(heap, (-c, inv[pair[0]], inv[pair[1]], pair[0], pair[1]))
            if step % 100 == 0:
                bar.update(100)
        bar.update(len(merges) - bar.n)
    finally:
        bar.close()
    return tokens, merges


def _apply_merge(
    a: int,
    b: int,
    new_id: int,
    step: int,
    words: list[list[int]],
    counts: list[int],
    pair_counts: dict[Pair, int],
    pair_words: dict[Pair, list[int]],
    last_visit: list[int],
) -> set[Pair]:
    """Merge (a, b) into `new_id` in every word containing it, updating the pair statistics.

    Returns the set of pairs that contain `new_id` (the only pairs whose counts grew).
    """
    created: set[Pair] = set()
    candidates = pair_words.pop((a, b), [])
    pair_counts.pop((a, b), None)
    for wi in candidates:
        if last_visit[wi] == step:
            continue
        last_visit[wi] = step
        word = words[wi]
        n = len(word)
        merged: list[int] = []
        i = 0
        found = False
        while i < n:
            if i + 1 < n and word[i] == a and word[i + 1] == b:
                merged.append(new_id)
                i += 2
                found = True
            else:
                merged.append(word[i])
                i += 1
        if not found:
            continue
        c = counts[wi]
        for pair in zip(word, word[1:], strict=False):
            if pair != (a, b):
                left = pair_counts[pair] - c
                if left:
                    pair_counts[pair] = left
                else:
                    del pair_counts[pair]
        for pair in zip(merged, merged[1:], strict=False):
            pair_counts[pair] = pair_counts.get(pair, 0) + c
            if new_id in pair:
                if pair not in created:
                    created.add(pair)
                lst = pair_words.get(pair)
                if lst is None:
                    pair_words[pair] = [wi]
                elif lst[-1] != wi:
                    lst.append(wi)
        words[wi] = merged
    return created
