"""Global top-k selection over every shard of a job, for :class:`~pipeline.core.step.GlobalStep`.

A :class:`Scorer` gives each document a ``value`` (written as metadata) and a ``rank``
(``None``: never selected). :func:`score_shards` runs one executor unit per shard that
scores its documents and writes them under ``workdir`` (``scores/<shard>.npz``, atomically;
a rerun reuses finished shards whose fingerprint matches), and returns each shard's top-k
ranks; :func:`global_threshold` merges those lists into the k-th largest rank over the
whole job. At ``load``/``run`` time :class:`ShardDecisions` looks each document up by its
key (id plus a hash of its text), so the decision does not depend on how the runner cuts
the shard into chunks or resumes it.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
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


def score_one_shard(scorer: Scorer, shard: StageShard, workdir: str, fingerprint: str,
                    k: int) -> np.ndarray:
    """Score one shard (or reuse its finished scores); return its top ``k`` ranks, descending."""
    path = _scores_path(workdir, shard.shard_id)
    if path.is_file():
        try:
            with np.load(path, allow_pickle=False) as z:
                if str(z["fingerprint"]) == fingerprint:
                    return _top(z["rank"], k)
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
    return _top(rank_arr, k)


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


def cut_top_fraction(scorer: Scorer, shards: list[StageShard], workdir: str,
                     fingerprint: str, fraction: float, executor: Executor, desc: str) -> None:
    """Score every shard and save the job-wide cut that keeps the top ``fraction`` of documents.

    Does nothing when ``workdir`` already holds the decision of this ``fingerprint`` (a
    rerun). Each shard's top list is bounded only by its size, since how many documents the
    job has is known once every shard is scored.
    """
    old = read_decision(workdir)
    if old is not None and old.get("fingerprint") == fingerprint:
        return
    tops, total = score_shards(scorer, shards, workdir, fingerprint, k=2**62,
                               executor=executor, desc=desc)
    k = math.ceil(fraction * total)
    write_decision(workdir, {"fingerprint": fingerprint, "threshold": global_threshold(tops, k),
                             "k": k, "total": total})


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
