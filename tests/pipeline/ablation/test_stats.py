"""The ablation's statistics against known values and simulated designs with a known effect."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pipeline.ablation.stats import (
    bootstrap_documents,
    design_table,
    holm,
    mde,
    paired_effect,
    t_cdf,
    t_ppf,
)


def test_t_distribution_matches_tables() -> None:
    # two-sided 95% critical values (any statistics table)
    for df, crit in [(1, 12.706205), (2, 4.302653), (4, 2.776445), (10, 2.228139),
                     (30, 2.042272)]:
        assert t_ppf(0.975, df) == pytest.approx(crit, rel=1e-6)
        assert t_cdf(crit, df) == pytest.approx(0.975, abs=1e-7)
    assert t_ppf(0.8, 2) == pytest.approx(1.060660, rel=1e-6)
    assert t_ppf(0.975, math.inf) == pytest.approx(1.959964, rel=1e-6)
    assert t_cdf(0.0, 3) == pytest.approx(0.5)


def test_holm_step_down() -> None:
    assert holm([0.01, 0.04, 0.03, math.nan]) == pytest.approx(
        [0.03, 0.06, 0.06, math.nan], nan_ok=True)


def _design(rng: np.random.Generator, effect: float, n_seeds: int, n_docs: int,
            sigma_seed: float, sigma_doc: float) -> tuple[list[float], np.ndarray, np.ndarray]:
    """One simulated ablation comparison: documents with their own true effects (mean
    ``effect`` over the document population), each seed adding a shift to the arm's loss."""
    tokens = rng.integers(200, 3000, size=n_docs).astype(float)
    doc_effect = effect + sigma_doc * rng.standard_normal(n_docs) / np.sqrt(tokens / 1000)
    base = 3.0 + 0.5 * rng.standard_normal(n_docs)
    diffs, deltas = [], []
    for _ in range(n_seeds):
        nll_r = (base + 0.05 * rng.standard_normal(n_docs)) * tokens
        nll_a = nll_r + (doc_effect + sigma_seed * rng.standard_normal()) * tokens
        diffs.append(float(nll_a.sum() / tokens.sum() - nll_r.sum() / tokens.sum()))
        deltas.append(nll_a - nll_r)
    return diffs, np.mean(deltas, axis=0), tokens


def test_combined_interval_covers_the_true_effect_about_95_percent() -> None:
    rng = np.random.default_rng(0)
    hits = 0
    for _ in range(200):
        diffs, delta, tokens = _design(rng, -0.05, 3, 150, sigma_seed=0.02, sigma_doc=0.2)
        st = paired_effect(diffs, delta, tokens, samples=500, seed=1)
        hits += st["ci"][0] <= -0.05 <= st["ci"][1]
    assert 0.90 * 200 <= hits <= 0.99 * 200


def test_seed_interval_alone_undercovers_when_documents_are_noisy() -> None:
    """Why the document bootstrap matters: the seed interval alone ignores which documents
    the eval set holds."""
    rng = np.random.default_rng(1)
    seed_hits = hits = 0
    for _ in range(200):
        diffs, delta, tokens = _design(rng, 0.0, 3, 60, sigma_seed=0.005, sigma_doc=0.5)
        st = paired_effect(diffs, delta, tokens, samples=500, seed=2)
        seed_hits += st["seed_ci"][0] <= 0.0 <= st["seed_ci"][1]
        hits += st["ci"][0] <= 0.0 <= st["ci"][1]
    assert seed_hits < 0.8 * 200 and hits >= 0.9 * 200


def test_mde_gives_80_percent_power_in_simulation() -> None:
    rng = np.random.default_rng(2)
    n, sigma = 5, 0.03
    effect = mde(sigma / math.sqrt(n), n - 1)
    crit = t_ppf(0.975, n - 1)
    trials = 4000
    d = effect + sigma * rng.standard_normal((trials, n))
    t = d.mean(axis=1) / (d.std(axis=1, ddof=1) / math.sqrt(n))
    power = float(np.mean(np.abs(t) > crit))
    assert 0.75 <= power <= 0.85


def test_bootstrap_is_seeded_and_centred() -> None:
    rng = np.random.default_rng(3)
    tokens = rng.integers(100, 1000, 300).astype(float)
    delta = (0.1 + 0.3 * rng.standard_normal(300)) * tokens
    a = bootstrap_documents(delta, tokens, 2000, seed=7)
    assert np.array_equal(a, bootstrap_documents(delta, tokens, 2000, seed=7))
    assert a.mean() == pytest.approx(delta.sum() / tokens.sum(), abs=3 * a.std() / 40)


def test_design_table_more_seeds_or_documents_lower_the_mde() -> None:
    rows = design_table(sigma_seed2=0.03 ** 2, sigma_doc2=0.02 ** 2 * 300, docs=300,
                        effect=0.02)
    mdes = [r["mde"] for r in rows]
    assert all(b < a for a, b in zip(mdes, mdes[1:], strict=False))
    # 2 seeds cannot reach 0.02 with any number of documents; 32 seeds can
    assert rows[0]["docs_needed"] is None and rows[-1]["docs_needed"] is not None
