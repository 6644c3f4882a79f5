"""Statistics of an ablation: paired effects, their noise, multiplicity and power.

An effect compares arm A with a reference arm R on one eval stream. Runs pair by seed (the
same seed gives the same initial weights and the same data-order rule in every arm), and
every run is scored on the same documents, so two sources of noise are separated:

- **seed noise**: the paired differences ``d_s = L_A,s - L_R,s`` over seeds; its standard
  error is ``se_seed = sd(d) / sqrt(n)`` (a 95% t-interval with n - 1 degrees of freedom);
- **evaluation-sample noise**: which documents the eval set happens to hold; a bootstrap
  over documents (resample documents with replacement, recompute the token-weighted effect
  of the seed-averaged per-document differences) gives ``se_doc`` and a percentile interval.

The combined standard error ``se = sqrt(se_seed^2 + se_doc^2)`` is that of an effect
generalised to new seeds and new documents of the same kind; its degrees of freedom come
from Welch-Satterthwaite, ``nu = (n - 1) * (se^2 / se_seed^2)^2`` (the bootstrap part counts
as known). The combined interval is ``effect +- t(0.975, nu) * se``, its p-value two-sided,
and Holm's step-down correction is applied over every comparison the report makes.

The smallest detectable effect at power 1 - beta and level alpha (two-sided) is
``MDE = (t(1 - alpha/2, nu) + t(1 - beta, nu)) * se`` (the usual normal-shift
approximation of the noncentral t; tested against a simulation).

Only numpy and the standard library: the GPU machine runs this.
"""

from __future__ import annotations

import math
from statistics import NormalDist
from typing import Any

import numpy as np

BOOTSTRAP_SAMPLES = 2000


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz)."""
    tiny, eps = 1e-300, 3e-16
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 400):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < eps:
            break
    return h


def betainc(a: float, b: float, x: float) -> float:
    """The regularized incomplete beta function I_x(a, b)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
                     + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def t_cdf(t: float, df: float) -> float:
    """P(T <= t) for Student's t with ``df`` degrees of freedom (``inf``: the normal)."""
    if math.isinf(df):
        return NormalDist().cdf(t)
    tail = 0.5 * betainc(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t > 0 else tail


def t_ppf(p: float, df: float) -> float:
    """The p-quantile of Student's t with ``df`` degrees of freedom (bisection on t_cdf)."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"quantile level {p} outside (0, 1)")
    if math.isinf(df) or df > 1e7:
        return NormalDist().inv_cdf(p)
    lo, hi = -1.0, 1.0
    while t_cdf(lo, df) > p:
        lo *= 2.0
    while t_cdf(hi, df) < p:
        hi *= 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if t_cdf(mid, df) < p:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-12 * max(1.0, abs(mid)):
            break
    return 0.5 * (lo + hi)


def holm(pvalues: list[float]) -> list[float]:
    """Holm step-down adjusted p-values (same order as ``pvalues``; NaN stays NaN)."""
    idx = [i for i, p in enumerate(pvalues) if not math.isnan(p)]
    m = len(idx)
    out = [math.nan] * len(pvalues)
    running = 0.0
    for rank, i in enumerate(sorted(idx, key=lambda i: pvalues[i])):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        out[i] = running
    return out


def bootstrap_documents(delta: np.ndarray, tokens: np.ndarray, samples: int = BOOTSTRAP_SAMPLES,
                        seed: int = 0) -> np.ndarray:
    """Bootstrap distribution of ``sum(delta) / sum(tokens)`` over documents.

    ``delta`` ``[D]``: a per-document difference of summed NLL; ``tokens`` ``[D]``: scored
    tokens per document. Each of ``samples`` resamples draws D documents with replacement
    (seeded); returns the ``[samples]`` recomputed effects.
    """
    rng = np.random.Generator(np.random.PCG64(seed))
    n = len(delta)
    out = np.empty(samples, dtype=np.float64)
    rows = max(1, 4_000_000 // max(1, n))  # bound the index matrix's memory
    for lo in range(0, samples, rows):
        k = min(rows, samples - lo)
        idx = rng.integers(0, n, size=(k, n))
        out[lo:lo + k] = delta[idx].sum(axis=1) / tokens[idx].sum(axis=1)
    return out


def mde(se: float, df: float, alpha: float = 0.05, power: float = 0.8) -> float:
    """Smallest true effect a two-sided level-``alpha`` test with standard error ``se`` and
    ``df`` degrees of freedom detects with probability ``power``."""
    return (t_ppf(1 - alpha / 2, df) + t_ppf(power, df)) * se


def combine(se_seed: float | None, n_seeds: int, se_doc: float | None) -> tuple[float, float]:
    """Combined standard error and Welch-Satterthwaite degrees of freedom.

    ``se_seed`` None (one seed: not measured) leaves the document part alone, with
    infinite degrees of freedom; ``se_doc`` None (no per-document losses) leaves the seed
    part alone, with n - 1.
    """
    s2 = 0.0 if se_seed is None else se_seed ** 2
    d2 = 0.0 if se_doc is None else se_doc ** 2
    se = math.sqrt(s2 + d2)
    if se_seed is None or n_seeds < 2:
        return se, math.inf
    if s2 == 0.0:
        return se, math.inf
    return se, (n_seeds - 1) * ((s2 + d2) / s2) ** 2


def paired_effect(diffs: list[float], doc_delta: np.ndarray | None = None,
                  doc_tokens: np.ndarray | None = None, alpha: float = 0.05,
                  power: float = 0.8, samples: int = BOOTSTRAP_SAMPLES,
                  seed: int = 0) -> dict[str, Any]:
    """Every statistic of one comparison.

    ``diffs``: per-seed differences of the whole-set losses (arm minus reference).
    ``doc_delta``: the seed-averaged per-document differences of summed NLL, ``doc_tokens``
    the scored tokens per document (both optional). Returns the effect, seed interval,
    document interval, combined interval, p-value and MDE (None where not measurable).
    """
    n = len(diffs)
    effect = float(np.mean(diffs))
    q = 1 - alpha / 2
    out: dict[str, Any] = {"effect": effect, "n_seeds": n}
    se_seed = None
    if n >= 2:
        sd = float(np.std(diffs, ddof=1))
        se_seed = sd / math.sqrt(n)
        half = t_ppf(q, n - 1) * se_seed
        out.update(sd_seed=sd, se_seed=se_seed, seed_ci=[effect - half, effect + half])
    se_doc = None
    if doc_delta is not None and doc_tokens is not None:
        boot = bootstrap_documents(doc_delta, doc_tokens, samples, seed)
        se_doc = float(np.std(boot, ddof=1))
        out.update(se_doc=se_doc, n_docs=int(len(doc_delta)),
                   doc_ci=[float(np.quantile(boot, alpha / 2)), float(np.quantile(boot, q))])
    if se_seed is None and se_doc is None:
        out.update(se=None, df=None, ci=None, p=math.nan, mde=None)
        return out
    se, df = combine(se_seed, n, se_doc)
    half = t_ppf(q, df) * se
    p = 2 * (1 - t_cdf(abs(effect) / se, df)) if se > 0 else (0.0 if effect else 1.0)
    out.update(se=se, df=df, ci=[effect - half, effect + half], p=p,
               mde=mde(se, df, alpha, power))
    return out


def design_table(sigma_seed2: float, sigma_doc2: float, docs: int, effect: float,
                 alpha: float = 0.05, power: float = 0.8,
                 seeds: tuple[int, ...] = (2, 3, 4, 5, 6, 8, 10, 16, 32)) -> list[dict[str, Any]]:
    """For each seed count, the MDE with ``docs`` eval documents and the documents needed
    to reach ``effect`` (None where more documents cannot reach it).

    Model: the variance of a seed's paired difference ``sigma_seed2`` does not depend on the
    eval set's size; the document part is ``sigma_doc2 / D`` (``sigma_doc2`` = a document's
    variance share, i.e. ``se_doc^2 * D`` of the pilot).
    """
    rows = []
    for n in seeds:
        se, df = combine(math.sqrt(sigma_seed2 / n), n, math.sqrt(sigma_doc2 / docs))
        factor = t_ppf(1 - alpha / 2, df) + t_ppf(power, df)
        # documents needed: (effect / factor)^2 >= sigma_seed2 / n + sigma_doc2 / D, solved
        # with the factor at this design's df (a slight underestimate when D grows)
        room = (effect / factor) ** 2 - sigma_seed2 / n
        need = math.ceil(sigma_doc2 / room) if room > 0 else None
        rows.append({"seeds": n, "mde": factor * se, "docs_needed": need})
    return rows
