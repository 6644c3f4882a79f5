"""``dedup_minhash_v1``: MinHash-LSH near-duplicate removal across all shards.

Word n-gram shingles (``ngram``) of each document are signed with ``num_perm`` MinHash
permutations; documents sharing any of ``bands`` bands of ``rows`` values are candidates;
candidates are verified (exact shingle Jaccard, or the signature estimate) against
``threshold``; accepted pairs are joined into clusters and the document of each cluster
that comes first in (shard, position) order is kept. Every document gets
``minhash_cluster`` (the ref ``shard_index << 32 | position`` of its cluster's kept
document, its own for a singleton) and ``minhash_cluster_size``. A removed document's
rejection record (``removed/``) holds its similarity to the kept document of its cluster
(exact shingle Jaccard, or the signature estimate when ``verify`` is not ``exact``).

Defaults (120 permutations, 20 bands x 6 rows, 5-grams, threshold 0.8): a pair with
Jaccard 0.8 becomes a candidate with probability 0.998, 0.7 with 0.918, 0.5 with 0.27,
0.3 with 0.015 (``1 - (1 - s**6)**20``). See docs/dedup-at-scale.md.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Literal

import numpy as np
import pyarrow as pa
from pydantic import Field, model_validator

from pipeline.core.document import Document
from pipeline.core.step import GlobalStep, Rejection, StageShard, StepContext, StepOptions
from pipeline.core.table_step import TableResult, TableStep, set_column
from pipeline.dedup.phases.memory import DEFAULT_TASK_MEMORY_GB, TASK_MEMORY_HELP

if TYPE_CHECKING:
    from pipeline.dedup.phases.minhash import MinHashConfig
    from pipeline.execution.executor import Executor


class MinHashDedupOptions(StepOptions):
    """Options of ``dedup_minhash_v1``."""

    num_perm: int = Field(120, ge=1, le=4096)
    bands: int | None = Field(None, ge=1, description="None: chosen from threshold (lsh_params)")
    rows: int | None = Field(None, ge=1, description="None: chosen with bands")
    min_candidate_prob: float = Field(
        0.997, gt=0.0, lt=1.0,
        description="when bands/rows are chosen: P(candidate) required at the threshold",
    )
    ngram: int = Field(5, ge=1, le=32)
    threshold: float = Field(0.8, gt=0.0, le=1.0, description="Jaccard to call a pair duplicate")
    verify: Literal["exact", "signature", "none"] = "exact"
    seed: int = 1
    partitions: int = Field(16, ge=1, description="shuffle partitions (bucket-grouping tasks)")
    max_map_tasks: int = Field(4096, ge=1, description="map tasks (each reads a run of shards)")
    task_memory_gb: float = Field(DEFAULT_TASK_MEMORY_GB, gt=0, description=TASK_MEMORY_HELP)

    @model_validator(mode="after")
    def _bands_fit(self) -> MinHashDedupOptions:
        if (self.bands is None) != (self.rows is None):
            raise ValueError("give both bands and rows, or neither (then they follow threshold)")
        if self.bands is None:
            from pipeline.dedup.minhash import lsh_params

            self.bands, self.rows = lsh_params(self.threshold, self.num_perm,
                                               self.min_candidate_prob)
        if self.bands * self.rows > self.num_perm:
            raise ValueError(f"bands * rows = {self.bands * self.rows} exceeds num_perm = {self.num_perm}")
        return self


class MinHashDedup(TableStep, GlobalStep):
    """Near-duplicate removal with MinHash-LSH, one survivor per cluster."""

    name = "dedup_minhash_v1"
    Options = MinHashDedupOptions
    metadata_fields = {"minhash_cluster": pa.int64(), "minhash_cluster_size": pa.int32()}

    def __init__(self, options: StepOptions | None = None) -> None:
        super().__init__(options)
        self._decisions = None

    @property
    def _kind(self) -> str:
        """What the recorded similarity is: exact shingle Jaccard or the signature estimate."""
        return "Jaccard" if self.options.verify == "exact" else "estimated Jaccard"

    def _config(self) -> MinHashConfig:
        from pipeline.dedup.phases.minhash import MinHashConfig

        o = self.options
        return MinHashConfig(num_perm=o.num_perm, bands=o.bands, rows=o.rows, ngram=o.ngram,
                             threshold=o.threshold, verify=o.verify, seed=o.seed,
                             partitions=o.partitions, max_map_tasks=o.max_map_tasks,
                             task_memory_gb=o.task_memory_gb)

    def prepare(self, shards: list[StageShard], workdir: str, executor: Executor) -> None:
        """Cluster near-duplicates across ``shards`` through ``executor``; resumable under
        ``workdir``.

        Also writes ``lsh.json``: the bands and rows used and the S-curve they give.
        """
        import json
        from pathlib import Path

        from pipeline.dedup.minhash import s_curve
        from pipeline.dedup.phases.minhash import prepare_minhash
        from pipeline.io.atomic import atomic_write_text

        o = self.options
        curve = {f"{j:.1f}": round(s_curve(j, o.bands, o.rows), 4) for j in (0.3, 0.5, 0.7, 0.8, 0.9)}
        atomic_write_text(json.dumps(
            {"num_perm": o.num_perm, "bands": o.bands, "rows": o.rows, "threshold": o.threshold,
             "p_candidate_at_jaccard": curve}, indent=1), Path(workdir) / "lsh.json")
        prepare_minhash(shards, workdir, self._config(), executor)

    def load(self, workdir: str, shard_id: str) -> None:
        """Load the cluster of every document of ``shard_id``."""
        from pipeline.dedup.phases.minhash import load_minhash

        self._decisions = load_minhash(workdir, shard_id)

    def seek(self, position: int) -> None:
        """Match repeated ids from document ``position`` of the shard on (see
        :meth:`GlobalStep.seek`)."""
        if self._decisions is not None:
            self._decisions.seek(position)

    def run(self, docs: Iterable[Document], ctx: StepContext) -> Iterator[Document]:
        """Yield each cluster's first document (and every singleton); drop the rest."""
        if self._decisions is None:
            raise RuntimeError(f"{self.name}: load() must be called before run()")
        for doc in docs:
            cluster, size, ref, similarity = self._decisions.get(doc.id)
            doc.metadata["minhash_cluster"] = cluster
            doc.metadata["minhash_cluster_size"] = size
            if cluster == ref:
                if size > 1:
                    ctx.stats.counters["clusters"] += 1
                yield doc
            else:
                ctx.drop(doc, self.name, self._rejection(size, similarity))

    def _rejection(self, size: int, similarity: float) -> Rejection:
        # a member can reach its survivor through other members, so its own
        # similarity to the survivor may be below the threshold: no comparison shown
        return Rejection("near_duplicate", round(similarity, 4), None, "",
                         f"in a cluster of {size}; {self._kind} to the kept document")

    def apply_table(self, table: pa.Table, ctx: StepContext) -> TableResult:
        """:meth:`run` on a table: every row gets its cluster columns; the rows that are
        not their cluster's first document are dropped."""
        if self._decisions is None:
            raise RuntimeError(f"{self.name}: load() must be called before apply_table()")
        decisions = [self._decisions.get(i) for i in table.column("id").to_pylist()]
        rows = [i for i, (cluster, _, ref, _) in enumerate(decisions) if cluster != ref]
        clusters = sum(1 for cluster, size, ref, _ in decisions if cluster == ref and size > 1)
        if clusters:
            ctx.stats.counters["clusters"] += clusters
        table = set_column(table, "minhash_cluster", [d[0] for d in decisions])
        table = set_column(table, "minhash_cluster_size", [d[1] for d in decisions])
        return TableResult(table, np.array(rows, dtype=np.int64),
                           [self._rejection(decisions[i][1], decisions[i][3]) for i in rows])
