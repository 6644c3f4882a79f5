"""``decontaminate_v1`` on real text: wiki_val (its first 100 articles) is the evaluation set; the stage holds some
of its articles (planted, one with case and punctuation changed, one as a paragraph inside
another page), Wikipedia articles of wiki_ref and webmix web pages (not planted), and
wiki_ref articles with 12 and 13 consecutive words of a wiki_val article inserted.

Beyond the planted cases, the step's decisions are compared with a plain-Python reference
(13-word tuples of regex words in a set), so a wiki_ref article that really shares a
13-word run with wiki_val (a citation, a template sentence) is expected to go too.
"""

from __future__ import annotations

import gzip
import json
import re
from itertools import islice
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.core.document import Document
from pipeline.core.step import StageShard, StepCheckError, StepContext, StepStats
from pipeline.execution.executor import LocalExecutor
from pipeline.io.readers import ReadOptions, read_shard
from pipeline.io.writer import write_documents_parquet
from pipeline.steps.decontaminate import Decontaminate

# the words of pipeline.dedup.text.ShingleHasher: ASCII letters and digits, and non-ASCII
# characters other than the Latin-1 punctuation, General Punctuation and CJK marks blocks
_WORD = re.compile("[0-9a-z\u0080-\u009f\u00c0-\u1fff\u2040-\u2fff\u3003-\U0010ffff]+")
_ASCII_LOWER = {c: c + 32 for c in range(65, 91)}


def _ngrams(text: str, n: int = 13) -> set[tuple[str, ...]]:
    words = _WORD.findall(text.translate(_ASCII_LOWER))
    grams = {tuple(words[i : i + n]) for i in range(len(words) - n + 1)}
    return {g for g in grams if not all(w.isdigit() and w.isascii() for w in g)}


def _jsonl(path: Path, n: int) -> list[str]:
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return [json.loads(line)["text"] for line in islice(f, n)]


@pytest.fixture(scope="module")
def wiki_val(shared_data: Path, tmp_path_factory) -> Path:
    """The first 100 articles of eval/wiki_val.jsonl.gz, as a gzipped JSONL evaluation set."""
    texts = _jsonl(shared_data / "eval" / "wiki_val.jsonl.gz", 100)
    path = tmp_path_factory.mktemp("eval") / "wiki_val100.jsonl.gz"
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.writelines(json.dumps({"text": t}) + "\n" for t in texts)
    return path


@pytest.fixture(scope="module")
def stage(shared_data: Path, wiki_val: Path, tmp_path_factory) -> tuple[list[StageShard], dict]:
    """Two stage shards and the ids of the planted documents by kind."""
    from resiliparse.extract.html2text import extract_plain_text
    from resiliparse.parse.html import HTMLTree

    val = _jsonl(wiki_val, 40)
    ref = _jsonl(shared_data / "reference" / "wiki_ref.jsonl.gz", 60)
    web = []
    path = str(shared_data / "webmix" / "webmix-00002.warc.gz")
    for d in islice(read_shard(path, "warc", 0, 1, ReadOptions(), StepStats()), 60):
        web.append(Document(d.id, extract_plain_text(HTMLTree.parse(d.text), main_content=True),
                            d.url))
    words = val[7].split()
    docs = [Document(f"ref{i}", t) for i, t in enumerate(ref)] + web
    planted = {
        "val0": val[0], "val1": val[1],
        "val2-shouted": re.sub(r"[,.;:]", " ! ", val[2].upper()),
        "page-quoting-val3": ref[50] + "\n\n" + max(val[3].split("\n"), key=len) + "\n" + ref[51],
        "ref-plus-13-words": ref[52] + " " + " ".join(words[100:113]) + " " + ref[53],
    }
    kept_planted = {"ref-plus-12-words": ref[54] + " " + " ".join(words[100:112]) + " " + ref[55]}
    docs += [Document(k, t) for k, t in {**planted, **kept_planted}.items()]
    root = tmp_path_factory.mktemp("decon")
    half = len(docs) // 2
    shards = []
    for s, part in enumerate((docs[:half], docs[half:])):
        p = root / f"{s:05d}.parquet"
        write_documents_parquet(part, p, {})
        shards.append(StageShard(f"{s:05d}", (str(p),)))
    return shards, {"planted": set(planted), "kept": set(kept_planted)}


def _run(step: Decontaminate, shards: list[StageShard], work: Path):
    step.setup()
    step.prepare(shards, str(work), LocalExecutor())
    kept, removed, stats = {}, {}, StepStats()
    for shard in shards:
        step.load(str(work), shard.shard_id)
        ctx = StepContext(StepStats(), lambda d, s, r: removed.setdefault(d.id, (d, r)))
        kept.update((d.id, d) for d in step.run(shard.documents(), ctx))
        stats.merge(ctx.stats)
    return kept, removed, stats


def test_planted_articles_are_removed_and_the_rest_matches_the_reference(
    stage, wiki_val, shared_data, tmp_path
) -> None:
    shards, ids = stage
    step = Decontaminate(Decontaminate.Options(evals=[str(wiki_val)]))
    step.check()
    kept, removed, stats = _run(step, shards, tmp_path)
    assert ids["planted"] <= removed.keys()
    assert ids["kept"] <= kept.keys()  # 12 shared words are not a 13-gram
    assert {r for _, r in removed.values()} == {"contaminated"}
    assert stats.dropped["contaminated"] == len(removed)
    # the reference: every document sharing a 13-word run with wiki_val, and only those
    eval_grams = set().union(*(_ngrams(t) for t in _jsonl(wiki_val, 100)))
    docs = {d.id: d.text for s in shards for d in s.documents()}
    expected = {i for i, t in docs.items() if _ngrams(t) & eval_grams}
    assert removed.keys() == expected
    assert len(kept) > 0.7 * len(docs)  # the non-planted majority stays
    for doc_id, (doc, _) in removed.items():
        assert doc.metadata["contaminated_ngrams"] == len(_ngrams(docs[doc_id]) & eval_grams)
        assert doc.metadata["contamination_eval"] == str(wiki_val)
    assert removed["val0"][0].metadata["contaminated_ngrams"] > 500
    assert all(d.metadata["contaminated_ngrams"] == 0 and d.metadata["contamination_eval"] is None
               for d in kept.values())
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["eval_sets"][str(wiki_val)]["documents"] == 100
    assert summary["ngrams"] == len(eval_grams)


def test_annotate_only_min_matches_parquet_evals_and_partitions(stage, wiki_val, tmp_path) -> None:
    """A Parquet copy of wiki_val under another text field, a many-partition index, and
    ``annotate_only`` give the same counts; ``min_matches`` keeps the small overlaps."""
    shards, ids = stage
    base, _, _ = _run(Decontaminate(Decontaminate.Options(evals=[str(wiki_val)],
                                                          annotate_only=True)),
                      shards, tmp_path / "a")
    texts = _jsonl(wiki_val, 100)
    table = pa.table({"body": texts, "id": [f"v{i}" for i in range(len(texts))]})
    pq.write_table(table.slice(0, 60), tmp_path / "val-a.parquet")
    pq.write_table(table.slice(60), tmp_path / "val-b.parquet")
    step = Decontaminate(Decontaminate.Options(
        evals=[str(tmp_path / "val-*.parquet")], text_field="body", annotate_only=True,
        max_partition_bytes=1 << 20))
    kept, removed, stats = _run(step, shards, tmp_path / "b")
    assert not removed and json.loads((tmp_path / "b" / "summary.json").read_text())[
        "partitions"] > 1
    counts = {k: d.metadata["contaminated_ngrams"] for k, d in kept.items()}
    assert counts == {k: d.metadata["contaminated_ngrams"] for k, d in base.items()}
    assert stats.counters["contaminated"] == sum(c > 0 for c in counts.values())
    big = Decontaminate(Decontaminate.Options(evals=[str(wiki_val)], min_matches=50))
    kept, removed, _ = _run(big, shards, tmp_path / "c")
    assert removed.keys() == {k for k, c in counts.items() if c >= 50}
    assert {"val0", "val1", "val2-shouted"} <= removed.keys()
    assert "ref-plus-13-words" in kept  # one shared n-gram is below 50


def test_check_names_the_bad_entry(tmp_path) -> None:
    with pytest.raises(StepCheckError, match=r"evals\[0\].*matches no file"):
        Decontaminate(Decontaminate.Options(evals=[str(tmp_path / "nope.jsonl")])).check()
    (tmp_path / "val.txt").write_text("text")
    with pytest.raises(StepCheckError, match=r"evals\[0\].*cannot tell the input format"):
        Decontaminate(Decontaminate.Options(evals=[str(tmp_path / "val.txt")])).check()
    with pytest.raises(ValueError, match="evals"):
        Decontaminate.Options(evals=[])


def test_on_ray(ray_local, stage, wiki_val, tmp_path) -> None:
    from pipeline.execution.executor import RayExecutor

    shards, ids = stage
    step = Decontaminate(Decontaminate.Options(evals=[str(wiki_val)], max_partition_bytes=1 << 20))
    step.prepare(shards, str(tmp_path), RayExecutor())
    removed = set()
    for shard in shards:
        step.load(str(tmp_path), shard.shard_id)
        ctx = StepContext(StepStats(), lambda d, s, r: removed.add(d.id))
        list(step.run(shard.documents(), ctx))
    assert ids["planted"] <= removed and not ids["kept"] & removed
