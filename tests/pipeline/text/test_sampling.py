"""Stochastic selection by score (pipeline.text.sampling): the formula, the coin, the rate."""

from __future__ import annotations

import math

import pytest
from pydantic import ValidationError

from pipeline.text.sampling import (
    SamplingOptions,
    keep_probability,
    sample_keep,
    sampling_fields,
    uniform,
)


def test_keep_probability_is_the_stated_logistic() -> None:
    # higher is better: sigmoid((score - threshold) / temperature)
    assert keep_probability(0.5, 0.5, 0.1, True) == 0.5
    assert keep_probability(0.6, 0.5, 0.1, True) == pytest.approx(1 / (1 + math.exp(-1)))
    assert keep_probability(0.3, 0.5, 0.1, True) == pytest.approx(1 / (1 + math.exp(2)))
    # lower is better (perplexity, toxicity): the sign flips
    assert keep_probability(300.0, 200.0, 50.0, False) == pytest.approx(1 / (1 + math.exp(2)))
    assert keep_probability(100.0, 200.0, 50.0, False) == pytest.approx(1 / (1 + math.exp(-2)))
    # far from the threshold: 0 and 1 without overflow
    assert keep_probability(1e6, 0.0, 1e-3, True) == 1.0
    assert keep_probability(-1e6, 0.0, 1e-3, True) == 0.0


def test_uniform_is_fixed_by_seed_and_id_and_spread_over_0_1() -> None:
    us = [uniform(f"doc-{i}", 7) for i in range(20000)]
    assert us == [uniform(f"doc-{i}", 7) for i in range(20000)]
    assert all(0.0 <= u < 1.0 for u in us)
    assert us[:100] != [uniform(f"doc-{i}", 8) for i in range(100)]
    # each tenth of [0, 1) gets its share: binomial(20000, 0.1) has sd 42
    for k in range(10):
        count = sum(k / 10 <= u < (k + 1) / 10 for u in us)
        assert abs(count - 2000) < 5 * 42, (k, count)


def _kept_minus_expected(scores: list[float], threshold: float, temperature: float,
                         higher: bool, expect_with) -> tuple[float, float]:
    """(kept - sum of expect_with's p, sd of the kept count) over ids doc-0, doc-1, ..."""
    kept = 0
    expected = var = 0.0
    for i, s in enumerate(scores):
        keep, _ = sample_keep(f"doc-{i}", s, threshold, temperature, 3, higher)
        kept += keep
        p = expect_with(s)
        expected += p
        var += p * (1 - p)
    return kept - expected, math.sqrt(var)


def test_kept_fraction_matches_the_mean_keep_probability() -> None:
    """20,000 documents with scores spread unevenly around the threshold: the number kept is
    within 4 standard deviations of the sum of p_keep, and the same bound rejects a sign
    error and a temperature error in the formula."""
    n = 20000
    scores = [0.2 + 0.6 * ((i * 7919) % n) / n for i in range(n)]  # uniform on [0.2, 0.8)
    threshold, temperature = 0.35, 0.08  # most scores above: a sign error shows

    def right(s: float) -> float:
        return keep_probability(s, threshold, temperature, True)

    def flipped(s: float) -> float:
        return keep_probability(s, threshold, temperature, False)

    def too_flat(s: float) -> float:
        return keep_probability(s, threshold, 2 * temperature, True)

    diff, sd = _kept_minus_expected(scores, threshold, temperature, True, right)
    assert abs(diff) < 4 * sd, (diff, sd)
    for wrong in (flipped, too_flat):
        diff, sd = _kept_minus_expected(scores, threshold, temperature, True, wrong)
        assert abs(diff) > 4 * sd, (wrong.__name__, diff, sd)
    # lower-is-better scores, same test
    def lower(s: float) -> float:
        return keep_probability(s, threshold, temperature, False)

    diff, sd = _kept_minus_expected(scores, threshold, temperature, False, lower)
    assert abs(diff) < 4 * sd


def test_kept_fraction_matches_per_band_of_p() -> None:
    """In each band of p_keep the kept share matches the band's mean p (a formula wrong in
    only part of the range fails here)."""
    n = 30000
    bands: dict[int, list[tuple[bool, float]]] = {}
    for i in range(n):
        score = 100 + 400 * ((i * 104729) % n) / n  # perplexity-like, lower is better
        keep, p = sample_keep(f"page-{i}", score, 250.0, 40.0, 11, False)
        bands.setdefault(min(int(p * 5), 4), []).append((keep, p))
    assert len(bands) == 5
    for band, rows in bands.items():
        mean_p = sum(p for _, p in rows) / len(rows)
        share = sum(k for k, _ in rows) / len(rows)
        sd = math.sqrt(sum(p * (1 - p) for _, p in rows)) / len(rows)
        assert abs(share - mean_p) < 4 * sd + 1e-9, (band, share, mean_p)


class _Opts(SamplingOptions):
    threshold: float | None = 0.5


def test_options_need_a_temperature_and_a_threshold_to_sample() -> None:
    assert _Opts().selection == "threshold" and sampling_fields(_Opts()) == {}
    assert set(sampling_fields(_Opts(selection="sample", temperature=0.1))) == {
        "keep_probability"}
    with pytest.raises(ValidationError, match="needs temperature"):
        _Opts(selection="sample")
    with pytest.raises(ValidationError, match="needs threshold"):
        _Opts(selection="sample", temperature=0.1, threshold=None)
    with pytest.raises(ValidationError):
        _Opts(selection="random")
    with pytest.raises(ValidationError):
        _Opts(selection="sample", temperature=0.0)
