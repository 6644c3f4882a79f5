"""The dedup global steps across shards, in this process (``LocalExecutor``, no Ray).

Each step must reach the decisions of the in-memory API on the same documents; the
corpus (``corpus`` fixture, conftest.py) is real Wikipedia text in four stage shards with
planted exact copies, near copies and a boilerplate line.
"""

from __future__ import annotations

import pytest

from pipeline.core.document import Document
from pipeline.core.step import StageShard, StepContext, StepStats
from pipeline.dedup import exact_keep_mask, exact_line_dedup, minhash_clusters
from pipeline.dedup.minhash import MinHasher, estimated_jaccard
from pipeline.dedup.phases.exact import ExactConfig, prepare_exact
from pipeline.dedup.phases.store import list_phase_files, marker_path
from pipeline.dedup.text import jaccard
from pipeline.execution import faults
from pipeline.execution.executor import LocalExecutor, TaskFailures
from pipeline.steps.dedup_exact import ExactDedup
from pipeline.steps.dedup_lines import LineDedup
from pipeline.steps.dedup_minhash import MinHashDedup


def _run_step(step, shard: StageShard, workdir: str, chunk: int = 9,
              removed: list | None = None) -> tuple[list[Document], StepStats]:
    """Run a prepared global step on one shard the way the runner does: chunk by chunk;
    the removed documents, with step and reason, are appended to ``removed`` if given."""
    step.load(workdir, shard.shard_id)
    stats = StepStats()
    removed = [] if removed is None else removed
    start = len(removed)
    ctx = StepContext(stats, lambda d, s, r: removed.append((d, s, r)), shard.shard_id)
    docs = list(shard.documents())
    out: list[Document] = []
    for k in range(0, len(docs), chunk):
        out.extend(step.run(docs[k : k + chunk], ctx))
    assert len(out) + len(removed) - start == len(docs)
    return out, stats


def _ordered(stage: list[StageShard]) -> list[StageShard]:
    return sorted(stage, key=lambda s: s.shard_id)


def test_exact_step_matches_the_list_api(corpus, tmp_path) -> None:
    stage, shards = corpus
    step = ExactDedup(ExactDedup.Options(partitions=3))
    step.prepare(stage, str(tmp_path), LocalExecutor())
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


def test_line_step_matches_the_list_api(corpus, boilerplate_line, tmp_path) -> None:
    stage, shards = corpus
    step = LineDedup(LineDedup.Options(min_count=2, min_chars=0, min_words=0, partitions=3))
    step.prepare(stage, str(tmp_path), LocalExecutor())
    all_docs = [d for docs in shards for d in docs]
    expected = dict(zip([d.id for d in all_docs], exact_line_dedup([d.text for d in all_docs]),
                        strict=True))
    removed_lines = 0
    for shard in _ordered(stage):
        out, stats = _run_step(step, shard, str(tmp_path))
        for d in out:
            assert d.text == expected[d.id]
            assert boilerplate_line not in d.text.split("\n")
            removed_lines += d.metadata["dedup_lines_removed"]
        assert stats.counters["lines_removed"] == sum(d.metadata["dedup_lines_removed"] for d in out)
    assert removed_lines >= 47  # the boilerplate line, at least


def test_line_step_drops_documents_left_too_short(corpus, tmp_path) -> None:
    stage, _ = corpus
    step = LineDedup(LineDedup.Options(min_count=2, min_words=2000, partitions=2))
    step.prepare(stage, str(tmp_path), LocalExecutor())
    out, stats = _run_step(step, _ordered(stage)[0], str(tmp_path))
    assert stats.dropped["too_short_after_line_dedup"] > 0
    assert all(len(d.text.split()) >= 2000 for d in out)


@pytest.mark.parametrize("verify", ["exact", "signature"])
def test_minhash_step_matches_the_list_api(corpus, tmp_path, verify) -> None:
    stage, shards = corpus
    step = MinHashDedup(MinHashDedup.Options(threshold=0.8, partitions=3, verify=verify))
    step.prepare(stage, str(tmp_path), LocalExecutor())
    all_docs = [d for docs in shards for d in docs]
    keep, cluster, size = minhash_clusters([d.text for d in all_docs], 120, 20, 5, 0.8,
                                           verify=verify)
    refs = [(s << 32) | p for s, docs in enumerate(shards) for p in range(len(docs))]
    expected = {d.id: (refs[cluster[i]], int(size[i])) for i, d in enumerate(all_docs)}
    kept = set()
    removed: list[tuple[Document, str, str]] = []
    for shard in _ordered(stage):
        out, stats = _run_step(step, shard, str(tmp_path), removed=removed)
        for d in out:
            assert (d.metadata["minhash_cluster"], d.metadata["minhash_cluster_size"]) == expected[d.id]
        kept |= {d.id for d in out}
    assert kept == {d.id for d, k in zip(all_docs, keep, strict=True) if k}
    # each removed member records its similarity to the document its cluster kept
    text_of_ref = {r: d.text for r, d in zip(refs, all_docs, strict=True)}
    hasher = MinHasher(120, 5, 1)
    for d, _, reason in removed:
        survivor = text_of_ref[d.metadata["minhash_cluster"]]
        if verify == "exact":
            a, b = hasher.shingler.shingle_sets([d.text, survivor])
            want = jaccard(a, b)
        else:
            sigs, _ = hasher.signatures_batched([d.text, survivor], 1 << 20)
            want = float(estimated_jaccard(sigs[0], sigs[1]))
        assert reason.value == round(want, 4) and 0 < reason.value <= 1
        assert f"cluster of {d.metadata['minhash_cluster_size']}" in reason.measure
    assert len(removed) > 20
    # every planted copy (exact copies differ in ASCII case and spacing only: same shingles)
    # is removed or its original is, never both kept
    for d in all_docs:
        if d.id.endswith(("-near", "-exact")):
            assert not ({d.id, d.id.rsplit("-", 1)[0]} <= kept)


def test_an_injected_failure_stops_the_phase_and_a_rerun_resumes(corpus, tmp_path) -> None:
    """The fault hook works in-process: the failed unit is reported, the others finish."""
    stage, _ = corpus
    config = ExactConfig(partitions=3)
    reference = prepare_exact(stage, str(tmp_path / "clean"), config, LocalExecutor())
    work = str(tmp_path / "work")
    with faults.inject_failures([("reduce", 1)]), pytest.raises(TaskFailures) as err:
        prepare_exact(stage, work, config, LocalExecutor())
    assert isinstance(err.value.__cause__, faults.InjectedFailure)
    assert [o.name for o in err.value.failures] == ["reduce/p00001"]
    # the unit's outputs were written but it never marked itself done; the others did
    assert not marker_path(work, "reduce", "p00001").exists()
    assert marker_path(work, "reduce", "p00002").exists()
    assert not list_phase_files(work, "decisions")
    assert prepare_exact(stage, work, config, LocalExecutor()) == reference


def test_a_workdir_refuses_other_options(corpus, tmp_path) -> None:
    stage, _ = corpus
    prepare_exact(stage, str(tmp_path), ExactConfig(partitions=2), LocalExecutor())
    with pytest.raises(ValueError, match="different configuration"):
        prepare_exact(stage, str(tmp_path), ExactConfig(partitions=3), LocalExecutor())


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
