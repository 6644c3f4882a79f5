"""``select_top_v1`` on real extracted webmix text with a score in its metadata."""

from __future__ import annotations

import math
from itertools import islice
from pathlib import Path

import pyarrow as pa

from pipeline.core.step import StageShard, StepContext, StepStats
from pipeline.execution.executor import LocalExecutor
from pipeline.io.readers import ReadOptions, read_shard
from pipeline.io.writer import write_documents_parquet
from pipeline.steps.extract import Extract
from pipeline.steps.select_top import SelectTop, SelectTopOptions


def test_keeps_the_job_wide_lowest_fraction_across_shards(shared_data: Path,
                                                          tmp_path: Path) -> None:
    path = str(shared_data / "webmix" / "webmix-00002.warc.gz")
    html = list(islice(read_shard(path, "warc", 0, 1, ReadOptions(), StepStats()), 50))
    ex = Extract()
    ex.setup()
    docs = list(ex.run(html, StepContext(StepStats())))
    for i, d in enumerate(docs):  # a real per-document number standing in for a score
        d.metadata["perplexity"] = None if i == 0 else float(len(d.text))
    shards = []
    for s, chunk in enumerate([docs[: len(docs) // 3], docs[len(docs) // 3:]]):
        f = tmp_path / f"{s:05d}-shard-00000.parquet"
        write_documents_parquet(chunk, f, {"perplexity": pa.float64()})
        shards.append(StageShard(f"{s:05d}-shard", (str(f),)))
    step = SelectTop(SelectTopOptions(field="perplexity", fraction=0.4, lowest=True))
    work = tmp_path / "work"
    step.prepare(shards, str(work), LocalExecutor())
    kept, ctx = [], StepContext(StepStats())
    for sh in shards:
        step.load(str(work), sh.shard_id)
        kept += list(step.run(sh.documents(), ctx))
    scored = sorted(len(d.text) for d in docs[1:])
    k = math.ceil(0.4 * len(docs))
    assert len(kept) >= k - 1 and max(len(d.text) for d in kept) == scored[len(kept) - 1]
    assert ctx.stats.dropped["no_score"] == 1
    assert ctx.stats.dropped["below_top_fraction"] == len(docs) - 1 - len(kept)
