"""Deduplication algorithms through the in-memory API (no Ray), on real Wikipedia text."""

from __future__ import annotations

import re
from collections.abc import Callable

import numpy as np
import pytest

from pipeline.dedup import (
    MinHasher,
    ShingleHasher,
    band_keys,
    candidate_pairs,
    connected_components,
    exact_keep_mask,
    exact_line_dedup,
    jaccard,
    minhash_clusters,
    minhash_keep_mask,
    s_curve,
    s_curve_midpoint,
)
from pipeline.dedup.minhash import bucket_edges


@pytest.fixture(scope="module")
def wiki(wiki_ref_articles: Callable[..., tuple[str, ...]]) -> tuple[str, ...]:
    """Real Wikipedia articles (the shared reference set): the first 400 of 150+ words."""
    return wiki_ref_articles(400)


def perturb(text: str, fraction: float, seed: int) -> str:
    """Replace ``fraction`` of the whitespace-separated words with new tokens."""
    rng = np.random.default_rng(seed)
    words = text.split()
    for i in rng.choice(len(words), size=int(round(fraction * len(words))), replace=False):
        words[i] = f"zz{rng.integers(1 << 40)}"
    return " ".join(words)


# ---------------------------------------------------------------- shingles


def test_shingles_ignore_case_punctuation_and_spacing_but_not_order() -> None:
    sh = ShingleHasher(3)
    a, b, c = sh.shingle_sets([
        "The quick brown fox, jumps over the lazy dog.",
        "the QUICK  brown fox jumps\u2014over the lazy dog",
        "The quick brown fox jumps over the dog lazy.",
    ])
    assert jaccard(a, b) == 1.0
    assert jaccard(a, c) < 1.0
    assert len(a) == 7  # 9 words, 3-grams


def test_shingle_counts_and_short_documents() -> None:
    sh = ShingleHasher(5)
    h, counts = sh.hashes(["one two", "", "a b c d e f g", "solo", " \n\t "])
    assert counts.tolist() == [1, 0, 3, 1, 0]
    assert len(h) == 5
    # a document's hashes do not depend on the batch it is hashed in
    alone, _ = sh.hashes(["a b c d e f g"])
    assert np.array_equal(alone, h[1:4])


def test_shingle_hashes_do_not_depend_on_batching(wiki: tuple[str, ...]) -> None:
    docs = list(wiki[:40])
    sh = ShingleHasher(5)
    h_all, c_all = sh.hashes(docs)
    bounds = np.concatenate([[0], np.cumsum(c_all)])
    for i in (0, 7, 39):
        h_i, c_i = sh.hashes([docs[i]])
        assert c_i[0] == c_all[i]
        assert np.array_equal(h_i, h_all[bounds[i] : bounds[i + 1]])


def test_distinct_shingles_rarely_collide(wiki: tuple[str, ...]) -> None:
    text = "\n".join(wiki[:200])
    h, _ = ShingleHasher(2).hashes([text])
    # reference tokeniser with the documented rule, in plain Python
    seps = r"[^a-z0-9\u0080-\U0010ffff]+|[\u00a0-\u00bf\u2000-\u203f\u3000-\u3002]+"
    ascii_lower = text.translate({c: c + 32 for c in range(65, 91)})
    words = [w for w in re.split(seps, ascii_lower) if w]
    assert len(h) == len(words) - 1
    distinct = len(set(zip(words, words[1:], strict=False)))
    assert distinct > 100_000
    assert len(np.unique(h)) >= distinct - 5  # 32-bit word hashes: a few collisions at most


# ---------------------------------------------------------------- signatures


def test_signatures_equal_the_reference_formula(wiki: tuple[str, ...]) -> None:
    docs = list(wiki[:30])
    mh = MinHasher(num_perm=64, ngram=5, chunk=777)  # small chunks: documents span several
    sigs = mh.signatures(docs)
    h, counts = mh.shingler.hashes(docs)
    bounds = np.concatenate([[0], np.cumsum(counts)])
    x = (h >> np.uint64(32)).astype(np.uint32) | np.uint32(1)
    for i in range(len(docs)):
        xi = x[bounds[i] : bounds[i + 1]]
        ref = (mh.a[:, None] * xi[None, :]).min(axis=1)
        assert np.array_equal(sigs[i], ref)


def test_empty_document_signature_is_the_sentinel() -> None:
    sigs = MinHasher(num_perm=16).signatures(["", "real words here for once"])
    assert (sigs[0] == 0xFFFFFFFF).all()
    assert not (sigs[1] == 0xFFFFFFFF).all()


def test_estimated_jaccard_tracks_true_jaccard(wiki: tuple[str, ...]) -> None:
    mh = MinHasher(num_perm=256, ngram=5)
    sh = mh.shingler
    errors = []
    for k, doc in enumerate(wiki[:60]):
        other = perturb(doc, 0.01 + 0.2 * (k % 10) / 10, seed=k)
        sa, sb = sh.shingle_sets([doc, other])
        sig = mh.signatures([doc, other])
        errors.append(np.mean(sig[0] == sig[1]) - jaccard(sa, sb))
    errors = np.array(errors)
    assert abs(errors.mean()) < 0.01  # unbiased
    assert np.abs(errors).mean() < 0.035  # ~ sqrt(J(1-J)/256) * 0.8


# ---------------------------------------------------------------- LSH


def test_s_curve_values_for_the_defaults() -> None:
    assert s_curve(0.8, 20, 6) == pytest.approx(0.998, abs=1e-3)
    assert s_curve(0.5, 20, 6) == pytest.approx(0.27, abs=0.01)
    assert s_curve(0.3, 20, 6) < 0.02
    assert s_curve(s_curve_midpoint(20, 6), 20, 6) == pytest.approx(0.5)


def test_candidate_rate_matches_the_s_curve(wiki: tuple[str, ...]) -> None:
    bands, rows = 8, 4
    predicted, observed = 0.0, 0
    sh = ShingleHasher(5)
    docs = wiki[:150]
    for k, doc in enumerate(docs):
        other = perturb(doc, 0.02 + 0.13 * (k % 7) / 7, seed=1000 + k)
        sa, sb = sh.shingle_sets([doc, other])
        predicted += s_curve(jaccard(sa, sb), bands, rows)
        sig = MinHasher(num_perm=bands * rows, seed=k).signatures([doc, other])
        keys = band_keys(sig, bands, rows)
        observed += int((keys[0] == keys[1]).any())
    sigma = np.sqrt(predicted * (1 - predicted / len(docs)))
    assert abs(observed - predicted) < 3.5 * sigma + 1


def test_bucket_edges_connect_exactly_the_documents_sharing_a_bucket() -> None:
    rng = np.random.default_rng(3)
    n, bands = 300, 5
    keys = rng.integers(0, 40, size=(n, bands)).astype(np.uint64)
    pairs = candidate_pairs(keys)
    root, _ = connected_components(pairs[:, 0], pairs[:, 1], n)
    # brute force: same component iff linked by a chain of shared (band, key)
    parent = list(range(n))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for j in range(bands):
        first: dict[int, int] = {}
        for i in range(n):
            k = int(keys[i, j])
            if k in first:
                parent[find(i)] = find(first[k])
            else:
                first[k] = i
    brute = np.array([find(i) for i in range(n)])
    for i in range(n):
        assert (root == root[i]).tolist() == (brute == brute[i]).tolist()
    # star edges: every edge starts at the smallest member of its bucket
    e = bucket_edges(np.zeros(4), np.array([7, 7, 7, 9], dtype=np.uint64), np.array([5, 2, 9, 1]))
    assert e.tolist() == [[2, 5], [2, 9]]


def test_connected_components_match_a_reference_union_find() -> None:
    rng = np.random.default_rng(0)
    for n, m in ((50, 30), (500, 400), (2000, 2500)):
        u = rng.integers(0, n, m)
        v = rng.integers(0, n, m)
        root, size = connected_components(u, v, n)
        parent = list(range(n))

        def find(i: int, parent: list[int] = parent) -> int:
            while parent[i] != i:
                i = parent[i]
            return i

        for a, b in zip(u.tolist(), v.tolist(), strict=True):
            ra, rb = find(a), find(b)
            if ra != rb:
                parent[max(ra, rb)] = min(ra, rb)
        ref = np.array([find(i) for i in range(n)])
        assert np.array_equal(root, ref)  # root = smallest member
        assert np.array_equal(size, np.bincount(ref, minlength=n)[ref])


# ---------------------------------------------------------------- keep mask


def test_minhash_keep_mask_keeps_exactly_one_per_cluster(wiki: tuple[str, ...]) -> None:
    rng = np.random.default_rng(7)
    base = list(wiki[:120])
    docs, origin = [], []
    for i, text in enumerate(base):
        docs.append(text)
        origin.append(i)
        for c in range(int(rng.integers(0, 3))):  # 0-2 near copies, 1% of words changed
            docs.append(perturb(text, 0.01, seed=10 * i + c))
            origin.append(i)
    order = rng.permutation(len(docs))
    docs = [docs[i] for i in order]
    origin = np.array(origin)[order]
    keep = minhash_keep_mask(docs, num_perm=120, bands=20, ngram=5, threshold=0.8)
    assert len(keep) == len(docs)
    for i in range(len(base)):
        members = np.flatnonzero(origin == i)
        kept = [m for m in members if keep[m]]
        assert kept == [members.min()], f"cluster {i}: kept {kept} of {members.tolist()}"


def test_minhash_clusters_report_cluster_and_size(wiki: tuple[str, ...]) -> None:
    a = wiki[0]
    docs = [wiki[1], a, perturb(a, 0.02, 1), wiki[2], perturb(a, 0.02, 2)]
    keep, cluster, size = minhash_clusters(docs, 120, 20, 5, 0.8)
    assert keep == [True, True, False, True, False]
    assert cluster.tolist() == [0, 1, 1, 3, 1]
    assert size.tolist() == [1, 3, 3, 1, 3]


def test_verification_rejects_pairs_below_the_threshold(wiki: tuple[str, ...]) -> None:
    a = wiki[3]
    b = perturb(a, 0.12, 5)  # 5-gram Jaccard about 0.35
    sa, sb = ShingleHasher(5).shingle_sets([a, b])
    assert jaccard(sa, sb) < 0.5
    assert minhash_keep_mask([a, b], 120, 60, 5, 0.8) == [True, True]
    assert minhash_keep_mask([a, b], 120, 60, 5, 0.8, verify="none") == [True, False]


def test_documents_without_words_are_never_near_duplicates() -> None:
    assert minhash_keep_mask(["", "", " ", "!!"], 32, 8, 5, 0.8) == [True] * 4


# ---------------------------------------------------------------- exact and lines


def test_exact_keep_mask_normalises_case_and_whitespace_only() -> None:
    docs = ["Hello  World\n", "hello world", "Hello, World", "other", "HELLO WORLD "]
    assert exact_keep_mask(docs) == [True, False, True, True, False]


def test_exact_line_dedup_removes_lines_occurring_min_count_times() -> None:
    docs = [
        "Share this article\nFirst unique line about cats.\nCookie policy",
        "share THIS article!\nSecond unique line about dogs.",
        "Third document.\nCookie Policy\nPosted on 13 May 2020",
        "Posted on 17 May 2021\nA fourth line.",
    ]
    out = exact_line_dedup(docs)
    assert out == [
        "First unique line about cats.",
        "Second unique line about dogs.",
        "Third document.",
        "A fourth line.",
    ]
    # dates normalise to the same line (digits -> 0), both removed; with N=3 nothing is
    assert exact_line_dedup(docs, min_count=3) == docs


def test_exact_line_dedup_on_real_text_keeps_unique_lines(wiki: tuple[str, ...]) -> None:
    docs = list(wiki[:50])
    boiler = "Retrieved from Wikipedia, the free encyclopedia"
    with_boiler = [d + "\n" + boiler for d in docs]
    assert exact_line_dedup(with_boiler) == exact_line_dedup(docs)
    assert all(boiler not in d for d in exact_line_dedup(with_boiler))
