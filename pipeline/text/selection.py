"""Global top-k selection over every shard of a job, for :class:`~pipeline.core.step.GlobalStep`.

A :class:`Scorer` gives each document a ``value`` (written as metadata) and a ``rank``
(``None``: never selected). Every shard is scored in one executor unit that writes its
documents' keys, values and ranks under ``workdir`` (``scores/<shard>.npz``, atomically; a
rerun reuses finished shards whose fingerprint matches). At ``load``/``run`` time
:class:`ShardDecisions` looks each document up by its key (id plus a hash of its text), so
the decision does not depend on how the runner cuts the shard into chunks or resumes it.

The job-wide cut (the ``k``-th largest finite rank; ranks at or above it are selected) is
found two ways with the same result:

* :func:`score_shards` + :func:`global_threshold`: each shard returns its top-``k`` ranks
  and the driver merges them, holding up to ``k`` floats per shard (``dsir_v1`` uses it;
  it is also the in-memory reference the tests compare the bounded cut with);
* :func:`cut_top_fraction`: a distributed radix select whose driver memory does not grow
  with the corpus. Each shard's unit also writes its finite ranks as sorted order-preserving
  ``uint64`` keys (``cut/<fingerprint>/keys/<shard>.npy``) and a histogram of their top 16
  bits; the driver sums the histograms one file at a time (65,536 counters), finds the
  bucket that holds the ``k``-th key, and fans out again to histogram the next 16 bits of
  only that bucket (a binary search in each sorted file), until the bucket holds at most
  ``max_candidates`` keys, which the units then write out for the driver to finish on.
  The driver holds O(65,536 + max_candidates + shards) numbers whatever the corpus size,
  in at most four fan-outs (the scoring one, then one per further 16-bit digit).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from pipeline.core.document import Document
from pipeline.core.step import StageShard
from pipeline.io.atomic import atomic_path, atomic_write_json

if TYPE_CHECKING:
    from pipeline.execution.executor import Executor


def doc_key(doc: Document) -> str:
    """Return the key that finds a document's decision: its id and a hash of its text."""
    h = hashlib.blake2b(doc.text.encode("utf-8", "surrogatepass"), digest_size=8).hexdigest()
    return f"{doc.id}\t{h}"


class Scorer(Protocol):
    """What :func:`score_shards` needs: a picklable object with ``setup`` and ``score``."""

    def setup(self) -> None:
        """Load models (called once in each shard's unit)."""

    def score(self, doc: Document) -> tuple[float | None, float | None]:
        """Return ``(value, rank)``; ``None`` value/rank for a document that cannot be scored."""


def _scores_path(workdir: str | os.PathLike, shard_id: str) -> Path:
    return Path(workdir) / "scores" / f"{shard_id}.npz"


def _top(ranks: np.ndarray, k: int) -> np.ndarray:
    finite = ranks[np.isfinite(ranks)]
    if k <= 0 or finite.size == 0:
        return finite[:0]
    if finite.size <= k:
        return np.sort(finite)[::-1]
    part = np.partition(finite, finite.size - k)[finite.size - k:]
    return np.sort(part)[::-1]


def _shard_ranks(scorer: Scorer, shard: StageShard, workdir: str,
                 fingerprint: str) -> np.ndarray:
    """Score one shard into ``scores/<shard>.npz`` (or reuse finished scores); return ranks."""
    path = _scores_path(workdir, shard.shard_id)
    if path.is_file():
        try:
            with np.load(path, allow_pickle=False) as z:
                if str(z["fingerprint"]) == fingerprint:
                    return z["rank"]
        except (OSError, ValueError, KeyError):
            pass  # a torn or foreign file: score again
    scorer.setup()
    keys: list[str] = []
    values: list[float] = []
    ranks: list[float] = []
    for doc in shard.documents():
        value, rank = scorer.score(doc)
        keys.append(doc_key(doc))
        values.append(math.nan if value is None else float(value))
        ranks.append(-math.inf if rank is None else float(rank))
    rank_arr = np.asarray(ranks, dtype=np.float64)
    # the temporary name ends in .npz so that np.savez does not append one
    with atomic_path(path, suffix=".npz") as tmp:
        np.savez(tmp, key=np.asarray(keys, dtype=str),
                 value=np.asarray(values, dtype=np.float64), rank=rank_arr,
                 fingerprint=np.asarray(fingerprint))
    return rank_arr


def score_one_shard(scorer: Scorer, shard: StageShard, workdir: str, fingerprint: str,
                    k: int) -> np.ndarray:
    """Score one shard (or reuse its finished scores); return its top ``k`` ranks, descending."""
    return _top(_shard_ranks(scorer, shard, workdir, fingerprint), k)


def score_shards(scorer: Scorer, shards: list[StageShard], workdir: str, fingerprint: str,
                 k: int, executor: Executor, desc: str = "scoring"
                 ) -> tuple[list[np.ndarray], int]:
    """Score every shard, one ``executor`` unit each; return each shard's top-``k`` ranks
    (in ``shards`` order) and the number of documents scored.

    The scorer is sent once per call, not once per shard. Raises
    :class:`~pipeline.execution.executor.TaskFailures` naming every shard that failed.
    """
    tops = executor.run(score_one_shard, [(s, workdir, fingerprint, k) for s in shards],
                        names=[s.shard_id for s in shards], desc=desc, unit="shard",
                        shared=(scorer,))
    total = 0
    for s in shards:
        with np.load(_scores_path(workdir, s.shard_id), allow_pickle=False) as z:
            total += int(z["rank"].size)
    return tops, total


def global_threshold(tops: list[np.ndarray], k: int) -> float:
    """Return the ``k``-th largest rank over all shards' top lists (``inf``: keep none)."""
    if k <= 0:
        return math.inf
    merged = np.concatenate([t for t in tops if t.size] or [np.empty(0)])
    if merged.size == 0:
        return math.inf
    if merged.size <= k:
        return float(merged.min())
    return float(np.partition(merged, merged.size - k)[merged.size - k])


def write_decision(workdir: str | os.PathLike, decision: dict[str, Any]) -> None:
    """Write ``decision.json`` (threshold, k, totals, fingerprint) atomically."""
    atomic_write_json(decision, Path(workdir) / "decision.json", indent=1, sort_keys=True)


def read_decision(workdir: str | os.PathLike) -> dict[str, Any] | None:
    """Return the decision written by :func:`write_decision`, or ``None`` if there is none."""
    path = Path(workdir) / "decision.json"
    if not path.is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8"))


DIGIT_BITS = 16
BUCKETS = 1 << DIGIT_BITS
MAX_CANDIDATES = 1 << 16
_SIGN = 1 << 63
_ALL = (1 << 64) - 1
_CHUNK = 1 << 20


def rank_keys(ranks: np.ndarray) -> np.ndarray:
    """Return the finite ``ranks`` as ``uint64`` keys that sort as the ranks do (unsorted).

    NaN and ±inf are left out, as :func:`_top` leaves them out of the count; ``-0.0`` is
    keyed as ``0.0``, which compares equal to it.
    """
    finite = np.asarray(ranks, dtype=np.float64)
    finite = finite[np.isfinite(finite)] + 0.0
    bits = finite.view(np.uint64)
    return np.where(bits >= np.uint64(_SIGN), ~bits, bits | np.uint64(_SIGN))


def key_rank(key: int) -> float:
    """Return the rank that the key ``key`` of :func:`rank_keys` stands for."""
    bits = key ^ _SIGN if key >= _SIGN else key ^ _ALL
    return float(np.asarray(bits, dtype=np.uint64).view(np.float64))


def _cut_dir(workdir: str | os.PathLike, fingerprint: str) -> Path:
    return Path(workdir) / "cut" / fingerprint


def _keys_path(cut: Path, shard_id: str) -> Path:
    return cut / "keys" / f"{shard_id}.npy"


def _round_path(cut: Path, round_no: int, shard_id: str) -> Path:
    return cut / f"round{round_no}" / f"{shard_id}.npy"


def _prefix_slice(keys: np.ndarray, prefix: int, bits: int) -> np.ndarray:
    """Return the run of the sorted ``keys`` whose top ``bits`` bits are ``prefix``."""
    if bits == 0:
        return keys
    shift = 64 - bits
    lo, hi = prefix << shift, (prefix + 1) << shift
    a = int(np.searchsorted(keys, np.uint64(lo), side="left"))
    b = keys.size if hi > _ALL else int(np.searchsorted(keys, np.uint64(hi), side="left"))
    return keys[a:b]


def _digit_histogram(part: np.ndarray, bits: int) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(digits, counts)`` of the non-empty buckets of the 16 bits after the top
    ``bits`` of the sorted keys ``part`` (read in chunks: a task's memory stays bounded)."""
    shift, mask = np.uint64(64 - bits - DIGIT_BITS), np.uint64(BUCKETS - 1)
    hist = np.zeros(BUCKETS, dtype=np.int64)
    for i in range(0, part.size, _CHUNK):
        digits = (np.asarray(part[i:i + _CHUNK]) >> shift) & mask
        # sorted keys with one prefix have sorted digits: count each run
        starts = np.flatnonzero(np.diff(digits, prepend=digits[:1] + mask) != 0)
        hist[digits[starts].astype(np.intp)] += np.diff(starts, append=digits.size)
    nz = np.flatnonzero(hist)
    return nz, hist[nz]


# a round file is one int64 .npy: kind, prefix, bits, count, docs, then the payload
_KINDS = {"hist": 0, "keys": 1}
_HEAD = 5


def _write_round(path: Path, kind: str, prefix: int, bits: int, part: np.ndarray,
                 docs: int = -1) -> None:
    """Write one unit's answer for a round: the histogram of the digit after ``prefix``
    (``kind`` "hist": the non-empty buckets' digits, then their counts) or the keys ("keys")."""
    if kind == "hist":
        digits, counts = _digit_histogram(part, bits)
        payload = np.concatenate([digits, counts])
    else:
        payload = np.asarray(part, dtype=np.uint64).view(np.int64)
    head = np.asarray([_KINDS[kind], prefix, bits, part.size, docs], dtype=np.int64)
    with atomic_path(path, suffix=".npy") as tmp:
        np.save(tmp, np.concatenate([head, payload]))


def _read_round(path: Path) -> tuple[tuple[int, int, int, int, int], np.ndarray]:
    """Return a round file's head (kind, prefix, bits, count, docs) and its payload."""
    arr = np.load(path, allow_pickle=False)
    if arr.dtype != np.int64 or arr.ndim != 1 or arr.size < _HEAD:
        raise ValueError(f"{str(path)!r} is not a round file of the top-fraction cut")
    head = tuple(int(v) for v in arr[:_HEAD])
    return head, arr[_HEAD:]  # type: ignore[return-value]


def _finished_round(path: Path, kind: str, prefix: int, bits: int) -> tuple[int, int] | None:
    """Return ``(count, docs)`` of a round file written for the same question, else None."""
    if not path.is_file():
        return None
    try:
        head, _ = _read_round(path)
    except (OSError, ValueError):
        return None  # a torn file: answer again
    if head[:3] != (_KINDS[kind], prefix, bits):
        return None
    return head[3], head[4]


def cut_score_shard(scorer: Scorer, shard: StageShard, workdir: str,
                    fingerprint: str) -> tuple[int, int]:
    """Unit of :func:`cut_top_fraction`'s first fan-out: score one shard (or reuse its scores),
    write its finite ranks as sorted keys and the histogram of their top 16 bits.

    Returns ``(documents, finite ranks)``; reuses its own finished files on a rerun.
    """
    cut = _cut_dir(workdir, fingerprint)
    out, keys_path = _round_path(cut, 0, shard.shard_id), _keys_path(cut, shard.shard_id)
    done = _finished_round(out, "hist", 0, 0)
    if done is not None and keys_path.is_file():
        return done[1], done[0]
    ranks = _shard_ranks(scorer, shard, workdir, fingerprint)
    keys = np.sort(rank_keys(ranks))
    with atomic_path(keys_path, suffix=".npy") as tmp:
        np.save(tmp, keys)
    _write_round(out, "hist", 0, 0, keys, docs=int(ranks.size))
    return int(ranks.size), int(keys.size)


def cut_refine_shard(workdir: str, fingerprint: str, shard_id: str, round_no: int, prefix: int,
                     bits: int, kind: str) -> int:
    """Unit of a refining fan-out: in one shard's sorted keys, take those whose top ``bits``
    bits are ``prefix`` and write their next digit's histogram (``kind`` "hist") or the keys
    ("keys") to the round's file. Returns how many keys have the prefix."""
    cut = _cut_dir(workdir, fingerprint)
    out = _round_path(cut, round_no, shard_id)
    done = _finished_round(out, kind, prefix, bits)
    if done is not None:
        return done[0]
    keys = np.load(_keys_path(cut, shard_id), mmap_mode="r", allow_pickle=False)
    part = _prefix_slice(keys, prefix, bits)
    _write_round(out, kind, prefix, bits, part)
    return int(part.size)


@dataclass
class CutStats:
    """What the driver of :func:`radix_cut` did: fan-outs, and the most values it held."""

    fanouts: int = 0
    buckets: int = BUCKETS
    candidates: int = 0


def radix_cut(workdir: str, fingerprint: str, finite: dict[str, int], need: int,
              executor: Executor, desc: str, max_candidates: int = MAX_CANDIDATES,
              stats: CutStats | None = None) -> float:
    """Return the ``need``-th largest finite rank of the job from the files that
    :func:`cut_score_shard` wrote, ``finite`` giving each shard's number of finite ranks.

    Holds one histogram (``BUCKETS`` counters) and at most ``max_candidates`` keys; each
    refining round is one executor fan-out over the shards that still have keys in the
    bucket. ``1 <= need <= sum(finite)``.
    """
    stats = stats if stats is not None else CutStats()
    cut = _cut_dir(workdir, fingerprint)
    active = [sid for sid, n in finite.items() if n]
    prefix, bits, round_no = 0, 0, 0
    while True:
        hist = np.zeros(BUCKETS, dtype=np.int64)
        for sid in active:
            _, payload = _read_round(_round_path(cut, round_no, sid))
            half = payload.size // 2
            hist[payload[:half]] += payload[half:]
        at_or_above = np.cumsum(hist[::-1])  # [j]: keys whose digit >= BUCKETS - 1 - j
        j = int(np.searchsorted(at_or_above, need, side="left"))
        digit = BUCKETS - 1 - j
        need -= int(at_or_above[j] - hist[digit])
        prefix, bits, size = (prefix << DIGIT_BITS) | digit, bits + DIGIT_BITS, int(hist[digit])
        if bits == 64:
            return key_rank(prefix)
        round_no += 1
        kind = "keys" if size <= max_candidates else "hist"
        found = executor.run(cut_refine_shard,
                             [(workdir, fingerprint, sid, round_no, prefix, bits, kind)
                              for sid in active],
                             names=active, desc=f"{desc} (cut, round {round_no})", unit="shard")
        stats.fanouts += 1
        if sum(found) != size:
            raise RuntimeError(f"the sorted score keys under {str(cut)!r} changed during the "
                               "cut; delete that folder and rerun")
        active = [sid for sid, n in zip(active, found, strict=True) if n]
        if kind == "keys":
            cand, pos = np.empty(size, dtype=np.uint64), 0
            for sid in active:
                _, payload = _read_round(_round_path(cut, round_no, sid))
                part = payload.view(np.uint64)
                cand[pos:pos + part.size] = part
                pos += part.size
            stats.candidates = max(stats.candidates, size)
            return key_rank(int(np.partition(cand, size - need)[size - need]))


def cut_top_fraction(scorer: Scorer, shards: list[StageShard], workdir: str,
                     fingerprint: str, fraction: float, executor: Executor, desc: str,
                     max_candidates: int = MAX_CANDIDATES) -> CutStats | None:
    """Score every shard and save the job-wide cut that keeps the top ``fraction`` of documents.

    ``k = ceil(fraction * documents)``; see :func:`cut_top_k`, which does the work.
    """
    return cut_top_k(scorer, shards, workdir, fingerprint, lambda total: math.ceil(
        fraction * total), executor, desc, max_candidates)


def cut_top_k(scorer: Scorer, shards: list[StageShard], workdir: str, fingerprint: str,
              k_of: Callable[[int], int], executor: Executor, desc: str,
              max_candidates: int = MAX_CANDIDATES,
              extra: dict[str, Any] | None = None) -> CutStats | None:
    """Score every shard and save the job-wide cut that keeps the top ``k_of(documents)``.

    The threshold is the ``k``-th largest finite rank (the smallest finite rank when fewer
    are finite, ``inf`` when none are or ``k`` is 0): exactly :func:`global_threshold` over
    every shard's full top list, found by :func:`radix_cut` with driver memory independent
    of the corpus size. ``extra`` is added to the saved decision. Does nothing when
    ``workdir`` already holds the decision of this ``fingerprint`` (a rerun; returns None);
    otherwise returns what the cut did. A killed run reuses every finished unit's files.
    """
    old = read_decision(workdir)
    if old is not None and old.get("fingerprint") == fingerprint:
        shutil.rmtree(Path(workdir) / "cut", ignore_errors=True)
        return None
    for stale in (Path(workdir) / "cut").glob("*"):
        if stale.name != fingerprint:
            shutil.rmtree(stale, ignore_errors=True)
    counts = executor.run(cut_score_shard, [(s, workdir, fingerprint) for s in shards],
                          names=[s.shard_id for s in shards], desc=desc, unit="shard",
                          shared=(scorer,))
    stats = CutStats(fanouts=1)
    total = sum(docs for docs, _ in counts)
    finite = {s.shard_id: n for s, (_, n) in zip(shards, counts, strict=True)}
    scored = sum(finite.values())
    k = k_of(total)
    threshold = math.inf
    if k > 0 and scored > 0:
        threshold = radix_cut(workdir, fingerprint, finite, min(k, scored), executor, desc,
                              max_candidates, stats)
    write_decision(workdir, {"fingerprint": fingerprint, "threshold": threshold, "k": k,
                             "total": total, "finite": scored, "cut_fanouts": stats.fanouts,
                             "cut_candidates": stats.candidates, **(extra or {})})
    shutil.rmtree(Path(workdir) / "cut", ignore_errors=True)
    return stats


@dataclass
class ShardDecisions:
    """One shard's scores and the global threshold; ``lookup`` answers per document."""

    values: dict[str, tuple[float, float]]
    threshold: float

    @classmethod
    def load(cls, workdir: str | os.PathLike, shard_id: str) -> ShardDecisions:
        """Read a shard's scores and the decision; RuntimeError if ``prepare`` did not finish."""
        decision = read_decision(workdir)
        path = _scores_path(workdir, shard_id)
        if decision is None or not path.is_file():
            raise RuntimeError(f"no decisions for shard {shard_id!r} under {str(workdir)!r}: "
                               "prepare() has not finished")
        with np.load(path, allow_pickle=False) as z:
            if str(z["fingerprint"]) != decision["fingerprint"]:
                raise RuntimeError(f"scores of shard {shard_id!r} are from another configuration")
            values = {
                k: (float(v), float(r))
                for k, v, r in zip(z["key"].tolist(), z["value"], z["rank"], strict=True)
            }
        return cls(values, float(decision["threshold"]))

    def lookup(self, doc: Document) -> tuple[float | None, bool]:
        """Return ``(value or None, selected)`` for ``doc``; KeyError if prepare never saw it."""
        key = doc_key(doc)
        if key not in self.values:
            raise KeyError(f"document {doc.id!r} was not scored in prepare(); the stage input "
                           "changed since — delete the job's _global folder and rerun")
        value, rank = self.values[key]
        return (None if math.isnan(value) else value), rank >= self.threshold


def fingerprint_of(obj: Any) -> str:
    """Return a short stable hash of a JSON-able configuration."""
    blob = json.dumps(obj, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]
