"""DSIR selection (``dsir_v1``): importance-resample the job's documents toward a target.

A :class:`GlobalStep`. ``prepare`` runs in the driver and fans out through the runner's
executor: one unit per shard counts its hashed n-gram features (the raw model, summed over
shards, so no process holds the pool), the target model is fitted from the ``target`` files
(one unit per file) or read from a ``model`` written by ``pipeline dsir fit``, then one unit
per shard scores its documents (log importance weight plus seeded Gumbel noise) and returns
their top-k list; the lists are merged into the job-wide k-th largest key. Each shard task
then keeps its documents at or above it: ``num_documents`` (or ``fraction`` of the job)
documents sampled without replacement in proportion to their importance weights. Without
either, it only annotates. Metadata: ``dsir_log_weight`` (null for a document with no
tokens, never selected).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import pyarrow as pa
from pydantic import Field, model_validator

from pipeline.core.document import Document
from pipeline.core.step import (
    GlobalStep,
    Rejection,
    StageShard,
    StepContext,
    StepOptions,
    require_file,
    require_match,
    require_sidecar,
)
from pipeline.io.atomic import atomic_path
from pipeline.text.normalize import NormalizeOptions

if TYPE_CHECKING:
    from pipeline.execution.executor import Executor


class DSIROptions(StepOptions):
    """Options of ``dsir_v1``."""

    target: list[str] | None = Field(None, description="target text files or globs")
    model: str | None = Field(None, description="`pipeline dsir fit` model (its target counts)")
    num_documents: int | None = Field(None, ge=0, description="documents to select")
    fraction: float | None = Field(None, gt=0.0, le=1.0, description="share to select")
    buckets: int = Field(10_000, gt=0)
    ngrams: int = Field(2, ge=1, le=2)
    max_tokens: int | None = Field(None, gt=0, description="tokens per document used")
    smoothing: float = Field(1.0, gt=0.0)
    seed: int = 0
    length_features: int | None = Field(
        None, gt=0,
        description="score every document as an example of this many features (mean log "
        "ratio times N, like the paper's equal-length chunks); unset sums over the document, "
        "which favours short documents over long ones with a slightly negative mean",
    )
    normalization: NormalizeOptions = Field(default_factory=NormalizeOptions)

    @model_validator(mode="after")
    def _check(self) -> DSIROptions:
        if (self.target is None) == (self.model is None):
            raise ValueError("give exactly one of target (files) or model (a dsir fit model)")
        if self.num_documents is not None and self.fraction is not None:
            raise ValueError("give num_documents or fraction, not both")
        return self


def _features(o: DSIROptions) -> Any:
    from pipeline.text.dsir import FeatureOptions

    return FeatureOptions(o.buckets, o.ngrams, o.max_tokens, o.normalization)


def _count_shard(shard: StageShard, path: str, fingerprint: str, feats: Any) -> int:
    """Count one shard's raw features into ``path`` (reused if finished); return its docs."""
    from pipeline.text.dsir import count_features

    p = Path(path)
    if p.is_file():
        try:
            with np.load(p, allow_pickle=False) as z:
                if str(z["fingerprint"]) == fingerprint:
                    return int(z["docs"])
        except (OSError, ValueError, KeyError):
            pass
    counts, docs = count_features((d.text for d in shard.documents()), feats)
    with atomic_path(p, suffix=".npz") as tmp:  # .npz: np.savez would append one
        np.savez(tmp, counts=counts, docs=np.int64(docs), fingerprint=np.asarray(fingerprint))
    return docs


class _Scorer:
    """Scores documents for :func:`pipeline.text.selection.score_shards` (picklable)."""

    def __init__(self, log_ratio: np.ndarray, feats: Any, seed: int,
                 length_features: int | None = None) -> None:
        self.log_ratio = log_ratio
        self.feats = feats
        self.seed = seed
        self.length_features = length_features

    def setup(self) -> None:
        """Nothing to load: the log ratios travel with the scorer."""

    def score(self, doc: Document) -> tuple[float | None, float | None]:
        """Return ``(log weight, log weight + Gumbel noise)``; ``(None, None)`` without tokens."""
        from pipeline.text.dsir import feature_buckets, gumbel
        from pipeline.text.selection import doc_key

        b = feature_buckets(doc.text, self.feats)
        if b.size == 0:
            return None, None
        lr = self.log_ratio[b]
        lw = float(lr.mean() * self.length_features if self.length_features else lr.sum())
        return lw, lw + gumbel(doc_key(doc), self.seed)


class DSIRSelect(GlobalStep):
    """Keeps ``num_documents`` (or ``fraction``) documents sampled by DSIR importance weights."""

    name = "dsir_v1"
    Options = DSIROptions
    metadata_fields: ClassVar[dict[str, pa.DataType]] = {"dsir_log_weight": pa.float64()}

    def __init__(self, options: StepOptions | None = None) -> None:
        super().__init__(options)
        self._decisions: Any = None

    def check(self) -> None:
        """Check that the ``model`` file (with its sidecar) or every ``target`` pattern exists."""
        o = self.options
        if o.model is not None:
            require_file("model", o.model, "fit it with `pipeline dsir fit` or fix the path")
            require_sidecar("model", o.model, "refit it with `pipeline dsir fit`")
        for i, pattern in enumerate(o.target or ()):
            require_match(f"target[{i}]", pattern, "fix the path or the glob")

    def _target_counts(self, feats: Any, executor: Executor) -> np.ndarray:
        from pipeline.text.corpus import expand_paths
        from pipeline.text.dsir import DSIRModel, count_files

        o = self.options
        if o.model is not None:
            return DSIRModel.load(o.model, feats).target_counts
        counts, _ = count_files(expand_paths(o.target), feats, executor, f"{self.name} target")
        return counts

    def prepare(self, shards: list[StageShard], workdir: str, executor: Executor) -> None:
        """Fit both models and score every shard through ``executor``; write the job-wide cut.

        Raises :class:`~pipeline.execution.executor.TaskFailures` when a unit fails.
        """
        from pipeline.text.dsir import log_probs
        from pipeline.text.selection import (
            cut_top_k,
            fingerprint_of,
            read_decision,
            score_shards,
            write_decision,
        )

        o = self.options
        feats = _features(o)
        inputs = {s.shard_id: list(s.files) for s in shards}
        fp = fingerprint_of({"step": self.name, **o.model_dump(), "inputs": inputs})
        old = read_decision(workdir)
        if old is not None and old.get("fingerprint") == fp:
            return
        raw_dir = Path(workdir) / "raw_counts"
        docs = executor.run(_count_shard,
                            [(s, str(raw_dir / f"{s.shard_id}.npz"), fp, feats) for s in shards],
                            names=[s.shard_id for s in shards], desc=f"{self.name} counting",
                            unit="shard")
        total = int(sum(docs))
        raw = np.zeros(o.buckets, dtype=np.int64)
        for s in shards:
            with np.load(raw_dir / f"{s.shard_id}.npz", allow_pickle=False) as z:
                raw += z["counts"]
        target = self._target_counts(feats, executor)
        log_ratio = log_probs(target, o.smoothing) - log_probs(raw, o.smoothing)
        with atomic_path(Path(workdir) / "log_ratio.npy", suffix=".npy") as tmp:
            np.save(tmp, log_ratio)
        if o.num_documents is not None:
            k = min(o.num_documents, total)
        elif o.fraction is not None:
            k = math.ceil(o.fraction * total)
        else:
            k = total
        scorer = _Scorer(log_ratio, feats, o.seed, o.length_features)
        features = {"raw_features": int(raw.sum()), "target_features": int(target.sum())}
        if o.num_documents is None and o.fraction is None:  # annotate only: keep everything
            _, scored = score_shards(scorer, shards, workdir, fp, 0, executor,
                                     desc=f"{self.name} scoring")
            write_decision(workdir, {"fingerprint": fp, "threshold": -math.inf, "k": k,
                                     "total": scored, **features})
            return
        # the job-wide k-th weight by a distributed radix select: the driver holds a bounded
        # histogram and candidate set, never every document's weight
        cut_top_k(scorer, shards, workdir, fp, lambda _: k, executor, f"{self.name} scoring",
                  extra=features)

    def load(self, workdir: str, shard_id: str) -> None:
        """Load this shard's weights and the job-wide cut."""
        from pipeline.text.selection import ShardDecisions

        self._decisions = ShardDecisions.load(workdir, shard_id)

    def run(self, docs: Iterable[Document], ctx: StepContext) -> Iterator[Document]:
        """Annotate ``dsir_log_weight``; yield the selected documents."""
        for doc in docs:
            value, selected = self._decisions.lookup(doc)
            doc.metadata["dsir_log_weight"] = value
            if selected:
                yield doc
            else:
                from pipeline.text.selection import doc_key

                key = self._decisions.values[doc_key(doc)][1]
                ctx.drop(doc, self.name, Rejection(
                    "not_resampled", None if math.isnan(key) else round(key, 4),
                    self._decisions.threshold, "<", "log weight + Gumbel noise"))
