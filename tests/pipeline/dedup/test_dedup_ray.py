"""The dedup steps across shards on Ray: same decisions as the in-memory API, resumable.

The corpus is real Wikipedia text spread over four stage shards (one of them in two
Parquet parts), with planted exact copies (case and spacing changed), near copies (1% of
words replaced) in other shards and a boilerplate line shared by many documents.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from wiki_helpers import wiki_ref_articles

from pipeline.dedup import exact_keep_mask, exact_line_dedup, minhash_clusters
from pipeline.dedup.jobs import (  # noqa: I001
    ExactConfig,
    LinesConfig,
    MinHashConfig,
    list_phase_files,
    load_minhash,
    prepare_exact,
    prepare_lines,
    prepare_minhash,
)
from pipeline.dedup.store import InjectedFailure, marker_path
from pipeline.core.document import Document
from pipeline.core.step import StageShard, StepContext, StepStats
from pipeline.steps.dedup_exact import ExactDedup
from pipeline.steps.dedup_lines import LineDedup
from pipeline.steps.dedup_minhash import MinHashDedup

ray = pytest.importorskip("ray")
SHARED = Path(__file__).resolve().parents[3].parent / "shared" / "data"
BOILER = "Subscribe to our newsletter for more articles like this"
_ASCII_UPPER = {c: c - 32 for c in range(97, 123)}


pytestmark = pytest.mark.usefixtures("ray_local")  # the session's private Ray (conftest)


def _wiki(n: int) -> list[str]:
    return list(wiki_ref_articles(n, 150, 3000))


def _perturb(text: str, fraction: float, seed: int) -> str:
    rng = np.random.default_rng(seed)
    words = text.split()
    for i in rng.choice(len(words), size=int(round(fraction * len(words))), replace=False):
        words[i] = f"zz{rng.integers(1 << 40)}"
    return " ".join(words)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[list[StageShard], list[list[Document]]]:
    """Four stage shards of real text with planted duplicates, written as Parquet."""
    from pipeline.io.writer import write_documents_parquet

    rng = np.random.default_rng(11)
    base = _wiki(140)
    shards: list[list[Document]] = [[] for _ in range(4)]
    for i, text in enumerate(base):
        if i % 3 == 0:
            text = text + "\n" + BOILER
        shards[i % 4].append(Document(id=f"w{i}", text=text, source="wiki"))
        if i % 7 == 0:  # exact copy elsewhere, ASCII case and spacing changed
            copy = text.translate(_ASCII_UPPER).replace(" ", "  ")
            shards[int(rng.integers(4))].append(Document(id=f"w{i}-exact", text=copy))
        if i % 5 == 0:  # near copy elsewhere
            shards[int(rng.integers(4))].append(
                Document(id=f"w{i}-near", text=_perturb(text, 0.01, i)))
    root = tmp_path_factory.mktemp("stage")
    stage: list[StageShard] = []
    for s, docs in enumerate(shards):
        if s == 2:  # two parts: order = part order
            half = len(docs) // 2
            files = []
            for k, part in enumerate((docs[:half], docs[half:])):
                path = root / f"{s:05d}-shard-{k:05d}.parquet"
                write_documents_parquet(part, path, {})
                files.append(str(path))
            stage.append(StageShard(f"{s:05d}-shard", tuple(files)))
        else:
            path = root / f"{s:05d}-shard.parquet"
            write_documents_parquet(docs, path, {})
            stage.append(StageShard(f"{s:05d}-shard", (str(path),)))
    # hand the shards over in a scrambled order: the job must sort them itself
    return [stage[i] for i in (3, 0, 2, 1)], shards


def _run_step(step, shard: StageShard, workdir: str, chunk: int = 9) -> tuple[list[Document], StepStats]:
    """Run a prepared global step on one shard the way the runner does: chunk by chunk."""
    step.load(workdir, shard.shard_id)
    stats = StepStats()
    removed: list[tuple[Document, str, str]] = []
    ctx = StepContext(stats, lambda d, s, r: removed.append((d, s, r)), shard.shard_id)
    docs = list(shard.documents())
    out: list[Document] = []
    for k in range(0, len(docs), chunk):
        out.extend(step.run(docs[k : k + chunk], ctx))
    assert len(out) + len(removed) == len(docs)
    return out, stats


def _ordered(stage: list[StageShard]) -> list[StageShard]:
    return sorted(stage, key=lambda s: s.shard_id)


def test_exact_step_matches_the_list_api(corpus, tmp_path) -> None:
    stage, shards = corpus
    step = ExactDedup(ExactDedup.Options(partitions=3))
    step.prepare(stage, str(tmp_path))
    all_docs = [d for docs in shards for d in docs]
    expected = {d.id for d, k in zip(all_docs, exact_keep_mask([d.text for d in all_docs]),
                                     strict=True) if k}
    kept, dropped = set(), 0
    for shard in _ordered(stage):
        out, stats = _run_step(step, shard, str(tmp_path))
        kept |= {d.id for d in out}
        dropped += stats.dropped["exact_duplicate"]
    assert kept == expected
    assert dropped == 20  # one planted exact copy per 7 documents
    # of each original and its planted copy exactly one is kept (whichever comes first)
    for d in all_docs:
        if d.id.endswith("-exact"):
            assert len({d.id, d.id.replace("-exact", "")} & kept) == 1


def test_line_step_matches_the_list_api(corpus, tmp_path) -> None:
    stage, shards = corpus
    step = LineDedup(LineDedup.Options(min_count=2, min_chars=0, min_words=0, partitions=3))
    step.prepare(stage, str(tmp_path))
    all_docs = [d for docs in shards for d in docs]
    expected = dict(zip([d.id for d in all_docs], exact_line_dedup([d.text for d in all_docs]),
                        strict=True))
    removed_lines = 0
    for shard in _ordered(stage):
        out, stats = _run_step(step, shard, str(tmp_path))
        for d in out:
            assert d.text == expected[d.id]
            assert BOILER not in d.text.split("\n")
            removed_lines += d.metadata["dedup_lines_removed"]
        assert stats.counters["lines_removed"] == sum(d.metadata["dedup_lines_removed"] for d in out)
    assert removed_lines >= 47  # the boilerplate line, at least


def test_line_step_drops_documents_left_too_short(corpus, tmp_path) -> None:
    stage, _ = corpus
    step = LineDedup(LineDedup.Options(min_count=2, min_words=2000, partitions=2))
    step.prepare(stage, str(tmp_path))
    out, stats = _run_step(step, _ordered(stage)[0], str(tmp_path))
    assert stats.dropped["too_short_after_line_dedup"] > 0
    assert all(len(d.text.split()) >= 2000 for d in out)


@pytest.mark.parametrize("verify", ["exact", "signature"])
def test_minhash_step_matches_the_list_api(corpus, tmp_path, verify) -> None:
    stage, shards = corpus
    step = MinHashDedup(MinHashDedup.Options(threshold=0.8, partitions=3, verify=verify))
    step.prepare(stage, str(tmp_path))
    all_docs = [d for docs in shards for d in docs]
    keep, cluster, size = minhash_clusters([d.text for d in all_docs], 120, 20, 5, 0.8,
                                           verify=verify)
    refs = [(s << 32) | p for s, docs in enumerate(shards) for p in range(len(docs))]
    expected = {d.id: (refs[cluster[i]], int(size[i])) for i, d in enumerate(all_docs)}
    kept = set()
    for shard in _ordered(stage):
        out, stats = _run_step(step, shard, str(tmp_path))
        for d in out:
            assert (d.metadata["minhash_cluster"], d.metadata["minhash_cluster_size"]) == expected[d.id]
        kept |= {d.id for d in out}
    assert kept == {d.id for d, k in zip(all_docs, keep, strict=True) if k}
    # every planted copy (exact copies differ in ASCII case and spacing only: same shingles)
    # is removed or its original is, never both kept
    for d in all_docs:
        if d.id.endswith(("-near", "-exact")):
            assert not ({d.id, d.id.rsplit("-", 1)[0]} <= kept)


def _decisions(workdir: str, stage: list[StageShard]) -> dict[str, tuple]:
    out = {}
    for shard in stage:
        dec = load_minhash(workdir, shard.shard_id)
        for d in shard.documents():
            out[d.id] = dec.get(d.id)
    return out


def test_minhash_job_resumes_after_a_crash_in_every_phase(corpus, tmp_path) -> None:
    stage, _ = corpus
    config = MinHashConfig(threshold=0.8, partitions=3)
    clean = str(tmp_path / "clean")
    prepare_minhash(stage, clean, config)
    reference = _decisions(clean, stage)
    assert sum(c != r for c, _, r in reference.values()) > 20

    work = str(tmp_path / "crashed")
    config = replace(config, max_map_tasks=3)  # map tasks over runs of shards: same result
    for phase, unit in (("map", 1), ("candidates", 2), ("verify1", 0), ("verify2", 1),
                        ("components", 0), ("final", 2)):  # map unit 1 = shards 1..2
        with pytest.raises(InjectedFailure):
            prepare_minhash(stage, work, config, fail_at=(phase, unit))
    prepare_minhash(stage, work, config)
    assert _decisions(work, stage) == reference
    # the outputs themselves are identical, not only the decisions
    for rel in ("candidates", "verify2", "decisions"):
        for a, b in zip(list_phase_files(clean, rel), list_phase_files(work, rel), strict=True):
            assert Path(a).name == Path(b).name
            assert _table_rows(a) == _table_rows(b)


def _table_rows(path: str) -> list:
    import pyarrow.parquet as pq

    return pq.read_table(path).to_pylist()


def test_minhash_job_redoes_deleted_and_truncated_outputs(corpus, tmp_path) -> None:
    stage, _ = corpus
    config = MinHashConfig(threshold=0.8, partitions=3, verify="signature")
    work = str(tmp_path)
    prepare_minhash(stage, work, config)
    reference = _decisions(work, stage)
    map_file = Path(work) / "map" / "p00001" / "m00002.parquet"
    with open(map_file, "r+b") as f:  # truncate: the marker's size no longer matches
        f.truncate(os.path.getsize(map_file) // 2)
    os.remove(Path(work) / "candidates" / "p00001" / "g00000.parquet")
    shutil.rmtree(Path(work) / "decisions")
    units = (("map", "m00000"), ("map", "m00002"), ("candidates", "p00001"),
             ("components", "all"))
    before = {u: marker_path(work, *u).stat().st_mtime_ns for u in units}
    prepare_minhash(stage, work, config)
    assert _decisions(work, stage) == reference
    after = {u: marker_path(work, *u).stat().st_mtime_ns for u in units}
    # damaged units were redone, untouched ones skipped
    assert after[("map", "m00002")] != before[("map", "m00002")]
    assert after[("candidates", "p00001")] != before[("candidates", "p00001")]
    assert after[("map", "m00000")] == before[("map", "m00000")]
    assert after[("components", "all")] == before[("components", "all")]


def test_exact_and_line_jobs_resume_after_a_crash(corpus, tmp_path) -> None:
    stage, _ = corpus
    for prepare, config, name in ((prepare_exact, ExactConfig(partitions=3), "exact"),
                                  (prepare_lines, LinesConfig(partitions=3), "lines")):
        clean, work = str(tmp_path / f"{name}-clean"), str(tmp_path / f"{name}-work")
        ref = prepare(stage, clean, config)
        config = replace(config, max_map_tasks=2)
        with pytest.raises(InjectedFailure):
            prepare(stage, work, config, fail_at=("map", 1))
        with pytest.raises(InjectedFailure):
            prepare(stage, work, config, fail_at=("reduce", 1))
        with pytest.raises(InjectedFailure):
            prepare(stage, work, config, fail_at=("final", 0))
        assert prepare(stage, work, config) == ref
        for a, b in zip(list_phase_files(clean, "decisions"), list_phase_files(work, "decisions"),
                        strict=True):
            assert _table_rows(a) == _table_rows(b)


def test_a_workdir_refuses_other_options(corpus, tmp_path) -> None:
    stage, _ = corpus
    prepare_exact(stage, str(tmp_path), ExactConfig(partitions=2))
    with pytest.raises(ValueError, match="different configuration"):
        prepare_exact(stage, str(tmp_path), ExactConfig(partitions=3))


def test_minhash_options_are_validated() -> None:
    with pytest.raises(ValueError):
        MinHashDedup.Options(num_perm=64, bands=20, rows=6)
    with pytest.raises(ValueError):
        MinHashDedup.Options(verify="maybe")
    from pipeline.core.config import parse_steps

    (step,) = parse_steps([{"dedup_minhash_v1": {"ngram": 3, "threshold": 0.7}}])
    # bands and rows not given follow the threshold (pipeline.dedup.minhash.lsh_params)
    from pipeline.dedup.minhash import lsh_params

    assert step.options.ngram == 3
    assert (step.options.bands, step.options.rows) == lsh_params(0.7, 120)
