"""``dedup_bloom_v1`` on real documents: the decisions of ``dedup_exact_v1`` in document
mode (but for counted false positives), exact paragraph dedup in paragraph mode, partitioned
filters, a resumed crash, and one run on Ray.

Document mode runs on the payloads of a webmix shard (with their planted exact copies);
paragraph mode on Wikipedia articles (wiki_ref) where every fifth document repeats
paragraphs of earlier ones.
"""

from __future__ import annotations

import gzip
import json
from itertools import islice
from pathlib import Path

import pytest

from pipeline.core.document import Document
from pipeline.core.step import StageShard, StepContext, StepStats
from pipeline.dedup.phases.bloom import BloomConfig, load_bloom, prepare_bloom
from pipeline.dedup.text import normalize_document
from pipeline.execution import faults
from pipeline.execution.executor import LocalExecutor, TaskFailures
from pipeline.io.readers import ReadOptions, read_shard
from pipeline.io.writer import write_documents_parquet
from pipeline.steps.dedup_bloom import BloomDedup
from pipeline.steps.dedup_exact import ExactDedup


def _write_stage(shards: list[list[Document]], root: Path) -> list[StageShard]:
    root.mkdir(parents=True, exist_ok=True)
    stage = []
    for s, docs in enumerate(shards):
        path = root / f"{s:05d}-shard.parquet"
        write_documents_parquet(docs, path, {})
        stage.append(StageShard(f"{s:05d}-shard", (str(path),)))
    return stage[::-1]  # handed over out of order: the job sorts them itself


@pytest.fixture(scope="module")
def webmix_stage(shared_data: Path, tmp_path_factory) -> list[StageShard]:
    """The payloads of webmix-00000 (with planted exact copies) as two stage shards."""
    path = str(shared_data / "webmix" / "webmix-00000.warc.gz")
    docs = list(read_shard(path, "warc", 0, 1, ReadOptions(html_only=False), StepStats()))
    half = len(docs) // 2
    return _write_stage([docs[:half], docs[half:]], tmp_path_factory.mktemp("webmix_stage"))


@pytest.fixture(scope="module")
def wiki_stage(shared_data: Path, tmp_path_factory) -> list[StageShard]:
    """Three shards of 120 wiki_ref articles; every fifth document also carries three
    paragraphs (lines) of an earlier article, one of them with its case and spacing changed;
    one document is only paragraphs seen before."""
    with gzip.open(shared_data / "reference" / "wiki_ref.jsonl.gz", "rt", encoding="utf-8") as f:
        texts = [json.loads(line)["text"] for line in islice(f, 120)]
    docs = []
    for i, text in enumerate(texts):
        if i % 5 == 4:
            paras = [p for p in texts[i - 3].split("\n") if len(p.split()) > 5][:3]
            paras[0] = "  ".join(paras[0].upper().split())
            text = paras[0] + "\n" + text + "\n" + "\n".join(paras[1:])
        docs.append(Document(id=f"w{i}", text=text, source="wiki"))
    docs.append(Document(id="all-seen", text="\n\n".join(texts[0].split("\n")[:6])))
    return _write_stage([docs[0:40], docs[40:80], docs[80:]], tmp_path_factory.mktemp("wiki"))


def _run(step, stage: list[StageShard], workdir: Path) -> tuple[dict[str, Document], StepStats]:
    """Run a prepared global step over every shard, as the runner does; return kept docs."""
    kept: dict[str, Document] = {}
    total = StepStats()
    for shard in sorted(stage, key=lambda s: s.shard_id):
        step.load(str(workdir), shard.shard_id)
        ctx = StepContext(StepStats(), None, shard.shard_id)
        kept.update((d.id, d) for d in step.run(shard.documents(), ctx))
        total.merge(ctx.stats)
    return kept, total


@pytest.fixture(scope="module")
def exact_kept(webmix_stage, tmp_path_factory) -> tuple[dict[str, Document], StepStats]:
    """``dedup_exact_v1``'s kept documents and stats on the webmix stage."""
    work = tmp_path_factory.mktemp("exact")
    exact = ExactDedup(ExactDedup.Options(partitions=3))
    exact.prepare(webmix_stage, str(work), LocalExecutor())
    return _run(exact, webmix_stage, work)


def test_document_mode_equals_dedup_exact_on_webmix(webmix_stage, exact_kept, tmp_path) -> None:
    want, exact_stats = exact_kept
    assert exact_stats.dropped["exact_duplicate"] > 10  # the planted mirror copies

    for max_bytes in (1 << 30, 1024):  # one filter, then several partitions
        work = tmp_path / f"bloom{max_bytes}"
        bloom = BloomDedup(BloomDedup.Options(max_filter_bytes=max_bytes))
        bloom.prepare(webmix_stage, str(work), LocalExecutor())
        summary = json.loads((work / "summary.json").read_text())
        assert (summary["partitions"] > 1) == (max_bytes == 1024)
        assert summary["filter_bytes"] <= max_bytes
        assert summary["hashes"] == 20 and summary["fp_rate_expected"] < 1e-6
        got, stats = _run(bloom, webmix_stage, work)
        assert got.keys() == want.keys()  # p = 1e-6 over 700 keys: no false positive
        assert stats.dropped["bloom_duplicate"] == exact_stats.dropped["exact_duplicate"]


def test_false_positives_only_add_removals(webmix_stage, exact_kept, tmp_path) -> None:
    """At p = 0.05 the Bloom filter drops every exact duplicate plus about p of the others."""
    want, _ = exact_kept
    bloom = BloomDedup(BloomDedup.Options(fp_rate=0.05))
    bloom.prepare(webmix_stage, str(tmp_path / "bloom"), LocalExecutor())
    got, _ = _run(bloom, webmix_stage, tmp_path / "bloom")
    assert got.keys() <= want.keys()
    false_pos = len(want) - len(got)
    summary = json.loads((tmp_path / "bloom" / "summary.json").read_text())
    assert summary["fp_rate_expected"] == pytest.approx(0.05, rel=0.3)
    # a key inserted as the i-th sees a filter holding i keys: on average half the final rate
    assert 0.2 * 0.05 * len(want) < false_pos < 1.5 * 0.05 * len(want)


def _paragraph_reference(stage: list[StageShard]) -> dict[str, str]:
    """Exact paragraph dedup with a Python set, in (shard, position, paragraph) order."""
    seen: set[str] = set()
    out = {}
    for shard in sorted(stage, key=lambda s: s.shard_id):
        for doc in shard.documents():
            keep = []
            for para in doc.text.split("\n"):
                norm = normalize_document(para)
                if not norm or norm not in seen:
                    keep.append(para)
                seen.add(norm)
            text = "\n".join(keep)
            if text.strip():
                out[doc.id] = text
    return out


def test_paragraph_mode_removes_repeated_paragraphs(wiki_stage, tmp_path) -> None:
    step = BloomDedup(BloomDedup.Options(mode="paragraph"))
    step.prepare(wiki_stage, str(tmp_path), LocalExecutor())
    kept, stats = _run(step, wiki_stage, tmp_path)
    expected = _paragraph_reference(wiki_stage)
    assert {k: d.text for k, d in kept.items()} == expected
    assert "all-seen" not in kept and stats.dropped["all_paragraphs_duplicate"] == 1
    assert kept["w4"].metadata["bloom_paragraphs_removed"] >= 3  # planted (one upper-cased)
    # the dropped document's paragraphs count too
    assert stats.counters["paragraphs_removed"] > sum(
        d.metadata["bloom_paragraphs_removed"] for d in kept.values())


def test_a_crashed_job_resumes_to_the_same_decisions(wiki_stage, tmp_path) -> None:
    config = BloomConfig(mode="paragraph", max_filter_bytes=4096, max_map_tasks=2)
    clean = prepare_bloom(wiki_stage, str(tmp_path / "clean"), config, LocalExecutor())
    assert clean["partitions"] > 1
    work = str(tmp_path / "crashed")
    for phase, unit in (("map", 1), ("filter", 2), ("final", 0)):
        with faults.inject_failures([(phase, unit)]), pytest.raises(TaskFailures):
            prepare_bloom(wiki_stage, work, config, LocalExecutor())
    assert prepare_bloom(wiki_stage, work, config, LocalExecutor()) == clean
    for shard in wiki_stage:
        a, b = load_bloom(str(tmp_path / "clean"), shard.shard_id), load_bloom(work, shard.shard_id)
        for doc in shard.documents():
            assert a.get(doc.id) == b.get(doc.id)


def test_on_ray(ray_local, wiki_stage, tmp_path) -> None:
    from pipeline.execution.executor import RayExecutor

    step = BloomDedup(BloomDedup.Options(mode="paragraph", max_filter_bytes=4096))
    step.prepare(wiki_stage, str(tmp_path), RayExecutor())
    kept, _ = _run(step, wiki_stage, tmp_path)
    assert {k: d.text for k, d in kept.items()} == _paragraph_reference(wiki_stage)


def test_options_are_validated() -> None:
    with pytest.raises(ValueError, match="mode"):
        BloomDedup.Options(mode="line")
    with pytest.raises(ValueError, match="fp_rate"):
        BloomDedup.Options(fp_rate=0)
    with pytest.raises(ValueError, match="unknown_key|extra"):
        BloomDedup.Options(unknown_key=1)
