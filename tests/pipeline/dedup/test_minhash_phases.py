"""The MinHash job's verification and survivor phases (pipeline/dedup/phases/minhash.py).

Chains of near copies of real Wikipedia articles (A, B = A with 2% of words replaced,
C = B with 2% more) make clusters in which a member's own Jaccard to the kept document can
be below the threshold: its similarity is not among the verified edges and must come from
the payload join, while directly linked members reuse verify2's value. Both are checked
against an independent computation, float for float.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from pipeline.core.document import Document
from pipeline.core.step import StageShard
from pipeline.dedup.minhash import MinHasher, estimated_jaccard
from pipeline.dedup.phases.minhash import (
    MinHashConfig,
    _texts_at,
    lookup_pairs,
    prepare_minhash,
)
from pipeline.dedup.phases.store import done_info, list_phase_files
from pipeline.dedup.text import jaccard
from pipeline.execution import faults
from pipeline.execution.executor import LocalExecutor, TaskFailures

THRESHOLD = 0.75


def _replace_words(text: str, fraction: float, rng: np.random.Generator) -> str:
    words = text.split()
    for i in rng.choice(len(words), size=int(round(fraction * len(words))), replace=False):
        words[i] = f"qq{rng.integers(1 << 40)}"
    return " ".join(words)


@pytest.fixture(scope="module")
def chains(tmp_path_factory, wiki_ref_articles) -> tuple[list[StageShard], dict[str, str]]:
    """Three stage shards: 14 chains A -> B -> C spread over them in rotating order, and
    40 unrelated articles. Returns the shards and every document's text by id."""
    from pipeline.io.writer import write_documents_parquet

    rng = np.random.default_rng(5)
    arts = wiki_ref_articles(200, 400, 3000)
    shards: list[list[Document]] = [[], [], []]
    for i, base in enumerate(arts[:14]):
        b = _replace_words(base, 0.02, rng)
        c = _replace_words(b, 0.02, rng)
        for k, (name, text) in enumerate((("a", base), ("b", b), ("c", c))):
            shards[(i + k) % 3].append(Document(id=f"{name}{i}", text=text))
    for i, text in enumerate(arts[14:54]):
        shards[i % 3].append(Document(id=f"u{i}", text=text))
    root = tmp_path_factory.mktemp("chains")
    stage = []
    for s, docs in enumerate(shards):
        path = root / f"{s:05d}-shard.parquet"
        write_documents_parquet(docs, path, {})
        stage.append(StageShard(f"{s:05d}-shard", (str(path),)))
    return stage, {d.id: d.text for docs in shards for d in docs}


@pytest.mark.parametrize("verify", ["exact", "signature", "none"])
def test_each_member_records_its_similarity_to_the_kept_document(chains, tmp_path, verify,
                                                                 minhash_decisions) -> None:
    stage, text = chains
    work = str(tmp_path)
    config = MinHashConfig(threshold=THRESHOLD, partitions=3, verify=verify)
    prepare_minhash(stage, work, config, LocalExecutor())
    rec = minhash_decisions(work, stage)
    id_of_ref = {r: i for i, (_, _, r, _) in rec.items()}
    hasher = MinHasher(config.num_perm, config.ngram, config.seed)
    members = 0
    for doc_id, (cluster, _, ref, sim) in rec.items():
        if cluster == ref:
            assert sim is None
            continue
        members += 1
        pair = [text[doc_id], text[id_of_ref[cluster]]]
        if verify == "exact":
            a, b = hasher.shingler.shingle_sets(pair)
            want = jaccard(b, a)
        else:
            sigs, _ = hasher.signatures_batched(pair)
            want = float(estimated_jaccard(sigs[1], sigs[0]))
        assert sim == want, doc_id  # the same float, whichever way it was found
    assert members >= 20
    info = [done_info(work, "survivor_pairs", f"g{g:05d}") for g in range(3)]
    known, joined = sum(i["known"] for i in info), sum(i["joined"] for i in info)
    assert known + joined == members
    if verify == "exact":
        # members linked to their root by a verified edge reuse its similarity; members of
        # a chain whose end is below the threshold are joined and compared
        assert known >= 14 and joined >= 3
        sims = [s for c, _, r, s in rec.values() if c != r]
        assert min(sims) < THRESHOLD <= max(sims)
    if verify == "none":
        assert known == 0


def test_verify2_compares_from_verify1_files_alone(chains, tmp_path) -> None:
    """verify1 hashes both ends of its group's pairs in one read of the shards; verify2 reads
    no shard (it is not given any) and gives the same accepted edges again."""
    stage, _ = chains
    work = str(tmp_path)
    config = MinHashConfig(threshold=THRESHOLD, partitions=3)
    prepare_minhash(stage, work, config, LocalExecutor())
    from pipeline.dedup.phases import minhash as phases

    for h in range(3):
        path = Path(work, "verify2", f"h{h:05d}.parquet")
        before = pq.read_table(path)
        path.unlink()
        phases._verify2(work, h, 3, config)
        assert pq.read_table(path).equals(before)
    assert sum(done_info(work, "verify2", f"h{h:05d}")["accepted"] for h in range(3)) >= 20


def test_minhash_job_resumes_after_a_crash_in_each_verify_and_survivor_phase(
        chains, tmp_path, minhash_decisions) -> None:
    stage, _ = chains
    config = MinHashConfig(threshold=THRESHOLD, partitions=3)
    clean = str(tmp_path / "clean")
    prepare_minhash(stage, clean, config, LocalExecutor())
    work = str(tmp_path / "crashed")
    for phase, unit in (("verify1", 1), ("verify2", 0), ("survivor_pairs", 2),
                        ("survivor_payloads", 0), ("survivor_similarity", 1)):
        with faults.inject_failures([(phase, unit)]), pytest.raises(TaskFailures):
            prepare_minhash(stage, work, config, LocalExecutor())
    prepare_minhash(stage, work, config, LocalExecutor())
    assert minhash_decisions(work, stage) == minhash_decisions(clean, stage)
    for rel in ("verify2", "decisions", "similarity"):
        for a, b in zip(list_phase_files(clean, rel), list_phase_files(work, rel), strict=True):
            assert pq.read_table(a).equals(pq.read_table(b))


def test_lookup_pairs_finds_each_pair_and_its_value() -> None:
    rng = np.random.default_rng(2)
    pairs = np.unique(rng.integers(0, 60, (400, 2)), axis=0)
    ea, eb = pairs[:250, 0], pairs[:250, 1]
    values = rng.random(250)
    q = pairs[rng.permutation(len(pairs))[:200]]  # some among the edges, some not
    found, got = lookup_pairs(q[:, 0], q[:, 1], ea, eb, values)
    table = {(int(a), int(b)): v for a, b, v in zip(ea, eb, values, strict=True)}
    for (a, b), f, v in zip(q.tolist(), found, got, strict=True):
        assert f == ((a, b) in table)
        assert (v == table[(a, b)]) if f else np.isnan(v)
    assert 0 < found.sum() < len(q)
    # (a, b) is not (b, a)
    found, _ = lookup_pairs(np.array([2]), np.array([1]), np.array([1]), np.array([2]),
                            np.array([0.5]))
    assert not found[0]


def test_texts_at_reads_the_wanted_rows_across_parts(corpus) -> None:
    stage, shards = corpus
    two_parts = next(s for s in stage if len(s.files) == 2)
    docs = shards[int(two_parts.shard_id[:5])]
    pos = np.array([0, 3, len(docs) // 2, len(docs) - 1])  # both parts, the last row
    assert _texts_at(two_parts, pos).to_pylist() == [docs[p].text for p in pos]
    with pytest.raises(ValueError, match="stage files changed after the map phase"):
        _texts_at(two_parts, np.array([len(docs)]))
