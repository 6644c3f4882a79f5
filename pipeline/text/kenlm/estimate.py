"""Interpolated modified Kneser-Ney estimation, as KenLM's ``lmplz`` computes it, in NumPy.

The corpus is one int32 array of word ids, each sentence written ``<s> w1 .. wk </s>``.
The n-grams of order ``n`` are the windows of ``n`` ids inside one sentence; each order's
distinct n-grams are found by sorting 64-bit keys ``(id of the (n-1)-gram prefix) * V +
last word``, so memory grows with the number of tokens (a few 8-byte arrays per order), not
with Python objects. Then, as in lmplz (``adjust_counts.cc``, ``initial_probabilities.cc``,
``interpolate.cc``):

* adjusted counts: raw counts for the highest order and for n-grams starting with ``<s>``;
  otherwise the number of distinct words seen before the n-gram (``<s>`` counts as 0);
* three discounts per order from the counts of adjusted counts 1..4 (Chen & Goodman, eq. 26):
  ``Y = t1 / (t1 + 2 t2)``, ``D_k = k - (k + 1) Y t_{k+1} / t_k``;
* ``p(w | c) = (a(cw) - D(a(cw))) / sum_x a(cx) + gamma(c) p(w | c')`` with
  ``gamma(c) = (D1 N1(c.) + D2 N2(c.) + D3 N3+(c.)) / sum_x a(cx)``; unigrams interpolate
  with the uniform distribution over the vocabulary without ``<s>`` (``<unk>`` is a
  zeroton, so its probability is ``gamma() / (|V| - 1)``); ``<s>`` has probability 1;
* ARPA backoff of a context ``c`` = ``gamma(c)``; 1 for an n-gram that is no context.
"""

from __future__ import annotations

import logging
from array import array
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import IO

import numpy as np

log = logging.getLogger(__name__)

UNK, BOS, EOS = 0, 1, 2
SPECIALS = ("<unk>", "<s>", "</s>")
FALLBACK_DISCOUNTS = (0.5, 1.0, 1.5)


class DiscountError(ValueError):
    """Kneser-Ney discounts cannot be estimated (too little or artificial data)."""


@dataclass
class Order:
    """The distinct n-grams of one order.

    ``ctx`` is the id of each n-gram's (n-1)-gram prefix, ``suffix`` the id of its (n-1)-gram
    suffix (both ids of the order below; for unigrams, -1), ``pos`` one corpus position
    where it starts, ``raw`` its count in the corpus.
    """

    n: int
    ctx: np.ndarray
    suffix: np.ndarray
    pos: np.ndarray
    raw: np.ndarray
    adjusted: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    log10_prob: np.ndarray = field(default_factory=lambda: np.empty(0))
    log10_backoff: np.ndarray = field(default_factory=lambda: np.empty(0))

    @property
    def size(self) -> int:
        """Number of distinct n-grams of this order."""
        return int(self.raw.size)


class CorpusBuilder:
    """Collects tokenised sentences into an int32 id array and a vocabulary."""

    def __init__(self) -> None:
        self.vocab: dict[str, int] = {w: i for i, w in enumerate(SPECIALS)}
        self.ids = array("i")
        self.sentences = 0

    def add_sentence(self, tokens: list[str]) -> None:
        """Append ``<s> tokens </s>``; tokens must not be the special symbols."""
        if not tokens:
            return
        v = self.vocab
        self.ids.append(BOS)
        self.ids.extend([v.setdefault(w, len(v)) for w in tokens])
        self.ids.append(EOS)
        self.sentences += 1

    def words(self) -> list[str]:
        """Return the vocabulary as a list indexed by id."""
        out = [""] * len(self.vocab)
        for w, i in self.vocab.items():
            out[i] = w
        return out


def count_ngrams(tokens: np.ndarray, vocab_size: int, order: int) -> list[Order]:
    """Return the distinct n-grams of orders 1..``order`` of a ``<s> .. </s>`` id array."""
    tokens = np.asarray(tokens, dtype=np.int64)
    length = tokens.size
    sent = np.cumsum(tokens == BOS, dtype=np.int64)
    v = np.int64(vocab_size)
    uni_raw = np.bincount(tokens, minlength=vocab_size).astype(np.int64)
    uni_pos = np.full(vocab_size, -1, dtype=np.int64)
    uni_pos[tokens[::-1]] = np.arange(length - 1, -1, -1, dtype=np.int64)
    orders = [Order(1, np.full(vocab_size, -1, np.int64), np.full(vocab_size, -1, np.int64),
                    uni_pos, uni_raw)]
    prev_ids = tokens  # id of the (n-1)-gram starting at each position (-1: none)
    for n in range(2, order + 1):
        if length < n:
            break
        starts = np.flatnonzero(sent[: length - n + 1] == sent[n - 1:])
        if starts.size == 0:
            break
        prefix = prev_ids[starts]
        key = prefix * v + tokens[starts + n - 1]
        del prefix
        uniq, inv = np.unique(key, return_inverse=True)
        del key
        ids = np.full(length, -1, dtype=np.int64)
        ids[starts] = inv
        pos = np.empty(uniq.size, dtype=np.int64)
        pos[inv] = starts
        raw = np.bincount(inv, minlength=uniq.size).astype(np.int64)
        del inv, starts
        ctx = uniq // v
        suffix = prev_ids[pos + 1]
        orders.append(Order(n, ctx, suffix, pos, raw))
        prev_ids = ids
    return orders


def adjust_counts(orders: list[Order], tokens: np.ndarray) -> None:
    """Fill each order's ``adjusted`` counts (see the module docstring)."""
    top = len(orders)
    for i, o in enumerate(orders):
        if i == top - 1:
            a = o.raw.copy()
        else:
            a = np.bincount(orders[i + 1].suffix, minlength=o.size).astype(np.int64)
            if o.n > 1:
                starts_bos = tokens[o.pos] == BOS
                a[starts_bos] = o.raw[starts_bos]
        if o.n == 1:
            a[BOS] = 0
            a[UNK] = 0
        o.adjusted = a


def discounts(adjusted: np.ndarray, n: int, fallback: bool) -> tuple[float, float, float]:
    """Return (D1, D2, D3+) from the counts of adjusted counts 1..4 of order ``n``."""
    t = np.bincount(np.minimum(adjusted, 5), minlength=6)[1:5].astype(np.float64)
    try:
        if (t == 0).any():
            raise DiscountError(
                f"cannot estimate Kneser-Ney discounts for {n}-grams: no {n}-gram has an "
                f"adjusted count of {int(np.flatnonzero(t == 0)[0]) + 1} (counts of counts "
                f"{t.astype(int).tolist()}); the data is too small or artificial "
                "(use discount_fallback to use 0.5 1 1.5)"
            )
        y = t[0] / (t[0] + 2 * t[1])
        d = tuple(float(k - (k + 1) * y * t[k] / t[k - 1]) for k in (1, 2, 3))
        for k, dk in enumerate(d, 1):
            if not 0.0 <= dk <= k:
                raise DiscountError(f"{n}-gram discount D{k} = {dk:.4f} is out of [0, {k}]")
        return d  # type: ignore[return-value]
    except DiscountError:
        if not fallback:
            raise
        log.warning("order %d: using fallback discounts %s", n, FALLBACK_DISCOUNTS)
        return FALLBACK_DISCOUNTS


def _discount_of(adjusted: np.ndarray, d: tuple[float, float, float]) -> np.ndarray:
    table = np.array([0.0, d[0], d[1], d[2]])
    return table[np.minimum(adjusted, 3)]


def estimate_probabilities(orders: list[Order], vocab_size: int, fallback: bool = False
                           ) -> list[tuple[float, float, float]]:
    """Fill ``log10_prob`` and ``log10_backoff`` of every order; return the discounts."""
    ds = [discounts(o.adjusted[o.adjusted > 0], o.n, fallback) for o in orders]
    probs: list[np.ndarray] = []
    gammas: list[np.ndarray] = []
    for i, o in enumerate(orders):
        a = o.adjusted.astype(np.float64)
        disc = _discount_of(o.adjusted, ds[i])
        k1, k2, k3 = (o.adjusted == 1), (o.adjusted == 2), (o.adjusted >= 3)
        if o.n == 1:
            denom = a.sum()
            gamma = (ds[i][0] * k1.sum() + ds[i][1] * k2.sum() + ds[i][2] * k3.sum()) / denom
            p = (a - disc) / denom + gamma / (vocab_size - 1)
            p[BOS] = 1.0
        else:
            nctx = orders[i - 1].size
            denom = np.bincount(o.ctx, weights=a, minlength=nctx)
            mass = np.bincount(o.ctx, weights=disc * (o.adjusted > 0), minlength=nctx)
            with np.errstate(invalid="ignore", divide="ignore"):
                gamma = np.where(denom > 0, mass / denom, np.nan)
            p = (a - disc) / denom[o.ctx] + gamma[o.ctx] * probs[i - 1][o.suffix]
            gammas.append(gamma)
        probs.append(p)
    for i, o in enumerate(orders):
        o.log10_prob = np.minimum(0.0, np.log10(probs[i]))
        if i < len(orders) - 1:
            g = gammas[i]
            o.log10_backoff = np.where(np.isnan(g), 0.0, np.log10(np.where(np.isnan(g), 1, g)))
        else:
            o.log10_backoff = np.zeros(o.size)
    return ds


def write_arpa(f: IO[str], orders: list[Order], tokens: np.ndarray, words: list[str],
               chunk: int = 200_000, progress: Callable[[int], None] | None = None) -> None:
    """Write the model in ARPA format (probabilities and backoffs as log10)."""
    f.write("\\data\\\n")
    for o in orders:
        f.write(f"ngram {o.n}={o.size}\n")
    word_arr = np.array(words, dtype=object)
    top = len(orders)
    for o in orders:
        f.write(f"\n\\{o.n}-grams:\n")
        for lo in range(0, o.size, chunk):
            hi = min(o.size, lo + chunk)
            if o.n == 1:
                cols = [word_arr[lo:hi]]
            else:
                pos = o.pos[lo:hi]
                cols = [word_arr[tokens[pos + k]] for k in range(o.n)]
            grams = cols[0] if o.n == 1 else [" ".join(t) for t in zip(*cols, strict=True)]
            probs = o.log10_prob[lo:hi].tolist()
            if o.n < top:
                bos = o.log10_backoff[lo:hi].tolist()
                lines = [f"{p:.7g}\t{g}\t{b:.7g}" for p, g, b in zip(probs, grams, bos,
                                                                       strict=True)]
            else:
                lines = [f"{p:.7g}\t{g}" for p, g in zip(probs, grams, strict=True)]
            f.write("\n".join(lines))
            f.write("\n")
            if progress is not None:
                progress(hi - lo)
    f.write("\n\\end\\\n")


@dataclass
class Estimate:
    """An estimated model: its orders, vocabulary and corpus (kept to spell the n-grams)."""

    orders: list[Order]
    words: list[str]
    tokens: np.ndarray
    discounts: list[tuple[float, float, float]]
    sentences: int

    def summary(self) -> dict[str, object]:
        """Return counts per order, discounts, tokens and sentences, JSON-ready."""
        return {
            "sentences": self.sentences,
            "tokens": int(self.tokens.size - 2 * self.sentences),
            "vocabulary": len(self.words),
            "ngrams": [o.size for o in self.orders],
            "discounts": [[round(x, 6) for x in d] for d in self.discounts],
        }


def estimate(sentences: Iterable[list[str]], order: int, discount_fallback: bool = False
             ) -> Estimate:
    """Estimate an interpolated modified Kneser-Ney model of ``order`` from token lists."""
    if order < 1:
        raise ValueError("order must be at least 1")
    builder = CorpusBuilder()
    for toks in sentences:
        builder.add_sentence(toks)
    if builder.sentences == 0:
        raise ValueError("the training corpus has no tokens")
    tokens = np.frombuffer(builder.ids, dtype=np.int32).astype(np.int64)
    words = builder.words()
    orders = count_ngrams(tokens, len(words), order)
    adjust_counts(orders, tokens)
    ds = estimate_probabilities(orders, len(words), discount_fallback)
    return Estimate(orders, words, tokens, ds, builder.sentences)


def ngram_probabilities(est: Estimate) -> dict[tuple[str, ...], tuple[float, float]]:
    """Return ``{n-gram: (log10 p, log10 backoff)}`` (for tests and small models)."""
    out: dict[tuple[str, ...], tuple[float, float]] = {}
    for o in est.orders:
        for j in range(o.size):
            gram = ((est.words[j],) if o.n == 1 else
                    tuple(est.words[t] for t in est.tokens[o.pos[j]: o.pos[j] + o.n]))
            out[gram] = (float(o.log10_prob[j]), float(o.log10_backoff[j]))
    return out

