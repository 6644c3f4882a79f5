"""The vectorised Bloom filter: its sizing formulas, sequential semantics and error rates.

Keys are the 128-bit keys (:func:`pipeline.dedup.text.document_key`) of the distinct
lines of real Wikipedia articles (``wiki_ref_articles``, conftest.py).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from pipeline.dedup.bloom import BloomFilter, bloom_size, expected_fp_rate
from pipeline.dedup.text import U64, document_key, normalize_document


@pytest.fixture(scope="module")
def line_keys(wiki_ref_articles) -> tuple[np.ndarray, np.ndarray]:
    """(h1, h2) of the distinct normalised non-blank lines of 1,000 wiki_ref articles."""
    seen: dict[str, None] = {}
    for text in wiki_ref_articles(1000, 1):
        for line in text.split("\n"):
            norm = normalize_document(line)
            if norm:
                seen.setdefault(norm, None)
    keys = [document_key(line) for line in seen]
    assert len(keys) > 40_000
    return (np.array([k[0] for k in keys], dtype=U64), np.array([k[1] for k in keys], dtype=U64))


def test_sizing_follows_the_formulas() -> None:
    for n, p in ((1000, 0.01), (10**6, 1e-6), (12345, 1e-3)):
        size = bloom_size(n, p)
        m = -n * math.log(p) / math.log(2) ** 2
        assert m <= size.bits < m + 64 and size.bits % 64 == 0
        assert size.hashes == max(1, round(size.bits / n * math.log(2)))
        # at the optimum the expected rate is the target (up to rounding k)
        assert expected_fp_rate(n, size.bits, size.hashes) == pytest.approx(p, rel=0.1)
    assert bloom_size(10**6, 1e-6).hashes == 20 and bloom_size(10**6, 1e-6).bytes == 3594400
    with pytest.raises(ValueError, match="false-positive rate"):
        bloom_size(10, 1.5)


@pytest.mark.parametrize("bits", [640, 1 << 16])
def test_test_and_set_equals_inserting_one_key_at_a_time(line_keys, bits) -> None:
    """The batch answers are the one-by-one answers, also in a tiny, saturated filter where
    keys of the same batch set each other's bits."""
    h1, h2 = line_keys
    rng = np.random.default_rng(3)
    pick = rng.integers(0, 3000, 6000)  # 3,000 keys, most of them repeated
    a, b = h1[pick], h2[pick]
    batch = BloomFilter(bits, 7)
    seen = np.concatenate([batch.test_and_set(a[:2500], b[:2500]),
                           batch.test_and_set(a[2500:], b[2500:])])
    single = BloomFilter(bits, 7)
    expect = []
    for x, y in zip(a, b, strict=True):
        expect.append(bool(single.contains(np.array([x]), np.array([y]))[0]))
        single.add(np.array([x]), np.array([y]))
    assert seen.tolist() == expect
    assert np.array_equal(batch.words, single.words)
    first = np.zeros(len(pick), dtype=bool)
    first[np.unique(pick, return_index=True)[1]] = True
    assert seen[~first].all()  # every repeat is reported (no false negatives)
    if bits == 1 << 16:  # roomy: no first occurrence is taken for a repeat
        assert not seen[first].any()
    else:  # saturated: many are
        assert seen[first].sum() > 100


def test_measured_false_positive_rate_matches_the_expected(line_keys) -> None:
    """Insert n distinct keys, query n other distinct keys: the share reported present is
    the expected rate, within sampling error; the inserted keys are all present."""
    h1, h2 = line_keys
    n = len(h1) // 2
    for p in (0.01, 0.001):
        bloom = BloomFilter.for_items(n, p)
        bloom.add(h1[:n], h2[:n])
        assert bloom.contains(h1[:n], h2[:n]).all()
        measured = bloom.contains(h1[n : 2 * n], h2[n : 2 * n]).mean()
        expected = expected_fp_rate(n, bloom.bits, bloom.hashes)
        sd = math.sqrt(expected * (1 - expected) / n)
        assert abs(measured - expected) < 4 * sd + 1e-9, (p, measured, expected)


def test_bad_sizes_are_refused() -> None:
    with pytest.raises(ValueError, match="multiple of 64"):
        BloomFilter(100, 3)
    with pytest.raises(ValueError, match="partition"):
        BloomFilter(1 << 60, 3)
