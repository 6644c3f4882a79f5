"""DSIR's hashed n-gram importance weights (Xie et al., 2023, "Data Selection for Language
Models via Importance Resampling").

A document becomes a bag of hashed unigram and bigram features (``buckets`` buckets, default
10,000). A bag-of-n-grams model is a categorical distribution over the buckets, fitted by
counting (with add-``smoothing`` smoothing); one is fitted on the target text, one on the
raw pool. A document's log importance weight is
``log p_target(x) - log p_raw(x) = sum_j c_j(x) (log p_target_j - log p_raw_j)``. Sampling
``k`` documents without replacement in proportion to the weights is the Gumbel top-k trick:
keep the ``k`` largest ``log w(x) + G(x)`` with ``G`` standard Gumbel noise, here drawn from
a seeded hash of the document so every run and every shard draws the same noise.

Hashing uses CRC-32 of each token's UTF-8 bytes (stable across processes, unlike Python's
``hash``) mixed into buckets with a 64-bit multiplicative hash; bigrams combine the two
token hashes.
"""

from __future__ import annotations

import hashlib
import math
import os
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import regex

from pipeline.io.atomic import atomic_path
from pipeline.text.model_meta import ModelMismatchError, check_meta, write_meta
from pipeline.text.normalize import NormalizeOptions, normalize_line

if TYPE_CHECKING:
    from pipeline.execution.executor import Executor

KIND = "dsir"
FORMAT_VERSION = 1
_TOKEN_RE = regex.compile(r"\w+|[^\w\s]+")
_MIX = np.uint64(0x9E3779B97F4A7C15)
_BIGRAM = np.uint64(0xC2B2AE3D27D4EB4F)


@dataclass(frozen=True)
class FeatureOptions:
    """How documents become hashed features (must match between fitting and scoring)."""

    buckets: int = 10_000
    ngrams: int = 2
    max_tokens: int | None = None
    normalization: NormalizeOptions = NormalizeOptions()

    def to_dict(self) -> dict[str, Any]:
        """Return the options without the normalisation (recorded separately)."""
        return {"buckets": self.buckets, "ngrams": self.ngrams, "max_tokens": self.max_tokens}


def tokens(text: str, opts: FeatureOptions) -> list[str]:
    """Return the word and punctuation tokens of the normalised text (capped at max_tokens)."""
    out: list[str] = []
    for line in text.splitlines():
        out.extend(_TOKEN_RE.findall(normalize_line(line, opts.normalization)))
        if opts.max_tokens is not None and len(out) >= opts.max_tokens:
            return out[: opts.max_tokens]
    return out


def feature_buckets(text: str, opts: FeatureOptions) -> np.ndarray:
    """Return the bucket of every unigram (and bigram, if ``ngrams`` is 2) of ``text``."""
    toks = tokens(text, opts)
    if not toks:
        return np.empty(0, dtype=np.int64)
    h = np.fromiter((zlib.crc32(t.encode("utf-8", "surrogatepass")) for t in toks),
                    dtype=np.uint64, count=len(toks))
    with np.errstate(over="ignore"):
        feats = h * _MIX
        if opts.ngrams >= 2 and h.size > 1:
            feats = np.concatenate([feats, (h[:-1] * _BIGRAM + h[1:]) * _MIX])
    return ((feats >> np.uint64(32)) % np.uint64(opts.buckets)).astype(np.int64)


def count_features(texts: Iterable[str], opts: FeatureOptions) -> tuple[np.ndarray, int]:
    """Return the summed bucket counts of ``texts`` and how many texts there were."""
    counts = np.zeros(opts.buckets, dtype=np.int64)
    n = 0
    for text in texts:
        b = feature_buckets(text, opts)
        if b.size:
            counts += np.bincount(b, minlength=opts.buckets)
        n += 1
    return counts, n


def log_probs(counts: np.ndarray, smoothing: float) -> np.ndarray:
    """Return log p of each bucket of a bag-of-n-grams model fitted on ``counts``."""
    c = counts.astype(np.float64) + smoothing
    return np.log(c) - np.log(c.sum())


def gumbel(key: str, seed: int) -> float:
    """Return standard Gumbel noise drawn from a seeded hash of ``key`` (deterministic)."""
    digest = hashlib.blake2b(f"{seed}\x00{key}".encode("utf-8", "surrogatepass"),
                             digest_size=8).digest()
    u = (int.from_bytes(digest, "little") + 0.5) / 2.0**64  # in (0, 1)
    return -math.log(-math.log(u))


@dataclass
class DSIRModel:
    """Target and raw bucket counts with the feature options that produced them."""

    target_counts: np.ndarray
    raw_counts: np.ndarray
    features: FeatureOptions
    smoothing: float = 1.0

    @property
    def log_ratio(self) -> np.ndarray:
        """``log p_target - log p_raw`` per bucket."""
        return log_probs(self.target_counts, self.smoothing) - log_probs(self.raw_counts,
                                                                           self.smoothing)

    def log_weight(self, text: str, log_ratio: np.ndarray | None = None) -> float | None:
        """Return the document's log importance weight, or ``None`` if it has no tokens."""
        b = feature_buckets(text, self.features)
        if b.size == 0:
            return None
        lr = self.log_ratio if log_ratio is None else log_ratio
        return float(lr[b].sum())

    def save(self, path: str | os.PathLike, training_files: list[dict[str, Any]],
             report: dict[str, Any] | None = None) -> None:
        """Write the counts to ``path`` (``.npz``) with a ``.meta.json`` sidecar."""
        path = str(path)
        # the temporary name ends in .npz so that np.savez does not append one
        with atomic_path(path, suffix=".npz") as tmp:
            np.savez(tmp, target_counts=self.target_counts, raw_counts=self.raw_counts)
        write_meta(path, KIND, FORMAT_VERSION, self.features.normalization,
                   {**self.features.to_dict(), "smoothing": self.smoothing}, training_files,
                   report)

    @classmethod
    def load(cls, path: str | os.PathLike, features: FeatureOptions | None = None,
             require_meta: bool = True) -> DSIRModel:
        """Read a model saved by :meth:`save`; ModelMismatchError if unusable or mismatching.

        ``features`` (when given) must match the model's buckets, n-grams, max_tokens and
        normalisation.
        """
        path = str(path)
        expect = features.to_dict() if features is not None else None
        norm = features.normalization if features is not None else None
        meta = check_meta(path, KIND, FORMAT_VERSION, norm, expect) if require_meta else {}
        try:
            with np.load(path, allow_pickle=False) as z:
                target, raw = z["target_counts"], z["raw_counts"]
        except (OSError, ValueError, KeyError, EOFError) as e:
            raise ModelMismatchError(f"DSIR model {path!r} cannot be loaded: {e}") from None
        opts = meta.get("options") or {}
        feats = features or FeatureOptions(
            buckets=int(opts.get("buckets", target.size)), ngrams=int(opts.get("ngrams", 2)),
            max_tokens=opts.get("max_tokens"),
            normalization=NormalizeOptions(**(meta.get("normalization") or {})))
        if target.shape != (feats.buckets,) or raw.shape != (feats.buckets,):
            raise ModelMismatchError(f"DSIR model {path!r} has {target.size} buckets, "
                                     f"expected {feats.buckets}")
        return cls(target, raw, feats, float(opts.get("smoothing", 1.0)))


def count_file(path: str, opts: FeatureOptions) -> tuple[np.ndarray, int]:
    """Return the summed bucket counts and document count of one training file."""
    from pipeline.text.corpus import iter_texts

    return count_features(iter_texts(path), opts)


def count_files(paths: list[str], opts: FeatureOptions, executor: Executor,
                desc: str = "counting") -> tuple[np.ndarray, int]:
    """Count features of ``paths``, one ``executor`` unit per file; return summed counts and
    the number of documents.

    Raises :class:`~pipeline.execution.executor.TaskFailures` naming every file that failed.
    """
    results = executor.run(count_file, [(p, opts) for p in paths], names=paths, desc=desc,
                           unit="file")
    total = np.zeros(opts.buckets, dtype=np.int64)
    docs = 0
    for counts, n in results:
        total += counts
        docs += n
    return total, docs
