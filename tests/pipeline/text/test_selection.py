"""The job-wide top-fraction cut (:func:`pipeline.text.selection.cut_top_fraction`).

The distributed radix cut must give exactly the threshold of the in-memory reference
(:func:`score_shards` with every rank + :func:`global_threshold`) on real scores and on
adversarial ones, resume from its files, and keep what reaches the driver bounded.
"""

from __future__ import annotations

import math
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from pipeline.core.document import Document
from pipeline.core.step import StageShard
from pipeline.execution.executor import LocalExecutor, Outcome, TaskFailures
from pipeline.io.writer import write_documents_parquet
from pipeline.text.selection import (
    BUCKETS,
    ShardDecisions,
    cut_top_fraction,
    global_threshold,
    key_rank,
    rank_keys,
    read_decision,
    score_shards,
)


class _MetaScorer:
    """Ranks a document by its ``score`` metadata as stored (NaN and ±inf passed through)."""

    def __init__(self) -> None:
        self.setups = 0

    def setup(self) -> None:
        self.setups += 1

    def score(self, doc: Document) -> tuple[float | None, float | None]:
        v = doc.metadata.get("score")
        return (None, None) if v is None else (float(v), float(v))


class _Recording(LocalExecutor):
    """A real in-process executor that also records the pickled size of every unit's value
    and fails the units named in ``fail`` (as a killed task would)."""

    def __init__(self, fail: tuple[str, ...] = ()) -> None:
        self.sizes: list[int] = []
        self.calls: list[str] = []
        self.fail = fail

    def map(self, fn, args, **kwargs: Any) -> list[Outcome]:  # noqa: ANN001
        self.calls.append(fn.__name__)
        if fn.__name__ in self.fail:
            return [Outcome(str(i), exception=RuntimeError("killed")) for i in range(len(args))]
        outcomes = super().map(fn, args, **kwargs)
        self.sizes += [len(pickle.dumps(o.value)) for o in outcomes]
        return outcomes


def _shards(groups: list[list[float | None]], folder: Path) -> list[StageShard]:
    """One stage shard per group of scores (an empty group: a shard with no parts)."""
    shards = []
    for s, scores in enumerate(groups):
        docs = [Document(f"s{s}-{i}", f"text {s} {i}", metadata={"score": v})
                for i, v in enumerate(scores)]
        files: tuple[str, ...] = ()
        if docs:
            path = folder / f"shard{s}.parquet"
            write_documents_parquet(docs, path, {"score": pa.float64()})
            files = (str(path),)
        shards.append(StageShard(f"{s:05d}", files))
    return shards


def _check_same_cut(groups: list[list[float | None]], fraction: float, tmp: Path,
                    caps: tuple[int, ...] = (1 << 16,)) -> list[dict]:
    """Run the new cut (once per candidate cap) and the in-memory reference on the same
    scores; assert they agree. Returns the decisions."""
    shards = _shards(groups, tmp)
    decisions = []
    for cap in caps:
        work = tmp / f"work{cap}"
        cut_top_fraction(_MetaScorer(), shards, str(work), "fp", fraction, LocalExecutor(),
                         "test", max_candidates=cap)
        decision = read_decision(work)
        assert decision is not None
        # the reference: every shard's whole top list merged in memory (reuses score files)
        tops, total = score_shards(_MetaScorer(), shards, str(work), "fp", k=2**62,
                                   executor=LocalExecutor())
        k = math.ceil(fraction * total)
        expected = global_threshold(tops, k)
        assert (decision["k"], decision["total"]) == (k, total)
        assert decision["threshold"] == expected, (cap, decision, expected)
        assert not (work / "cut").exists()  # the sorted keys and round files are removed
        ranks = [r for s in shards for _, r in ShardDecisions.load(work, s.shard_id).values.values()]
        kept = sum(r >= decision["threshold"] for r in ranks)
        finite = sum(math.isfinite(r) for r in ranks)
        assert kept >= min(k, finite)  # ties at the cut are all kept
        decisions.append(decision)
    return decisions


@pytest.fixture(scope="module")
def real_scores(shared_data: Path,
                jsonl_texts: Callable[..., list[str]]) -> dict[str, list[float | None]]:
    """Two real per-document numbers of 600 Wikipedia articles and 300 real emails: the word
    count (many ties) and the share of letters (nearly distinct), an empty text unscored."""
    texts = jsonl_texts(shared_data / "reference" / "wiki_ref.jsonl.gz", 600)
    texts += jsonl_texts(shared_data / "noisy" / "spamassassin.jsonl.gz", 300, "raw", stride=17)
    words: list[float | None] = [float(len(t.split())) for t in texts]
    letters: list[float | None] = [sum(c.isalpha() for c in t) / len(t) if t else None
                                   for t in texts]
    for i in range(0, len(texts), 97):  # some documents without a score, as model filters give
        words[i] = letters[i] = None
    return {"words": words, "letters": letters}


@pytest.mark.parametrize("field", ["words", "letters"])
@pytest.mark.parametrize("fraction", [0.001, 0.5, 1.0])
def test_real_scores_same_cut_as_in_memory_reference(real_scores: dict, field: str,
                                                     fraction: float, tmp_path: Path) -> None:
    scores = real_scores[field]
    _check_same_cut([scores[s::5] for s in range(5)], fraction, tmp_path, caps=(16,))


def test_real_scores_negated_and_one_bucket_of_candidates(real_scores: dict,
                                                          tmp_path: Path) -> None:
    # select_top's lowest=True ranks by -score; a large cap finishes after one histogram
    scores = [None if v is None else -v for v in real_scores["letters"]]
    [decision] = _check_same_cut([scores[:400], scores[400:]], 0.37, tmp_path)
    assert decision["cut_fanouts"] == 2 and decision["cut_candidates"] <= 1 << 16


_RNG = np.random.default_rng(13)
_ADVERSARIAL: dict[str, tuple[list[list[float | None]], float]] = {
    "all_ties": ([[2.5] * 300, [2.5] * 200], 0.3),
    "all_ties_keep_all": ([[2.5] * 300], 1.0),
    "many_ties_at_cut": ([[1.0] * 150 + list(_RNG.random(50)), [1.0] * 80 + [2.0] * 20], 0.5),
    "ties_across_zero_signs": ([[0.0, -0.0] * 40, [-0.0] * 30 + [1e-300] * 5], 0.5),
    "one_document": ([[0.25]], 1e-9),
    "single_shard": ([list(_RNG.normal(size=500))], 0.2),
    "empty_shards": ([[], list(_RNG.normal(size=100)), [], [None] * 10], 0.4),
    "nothing_scored": ([[None] * 20, []], 0.5),
    "no_documents": ([[], []], 0.5),
    "fewer_scored_than_k": ([[None] * 90 + [3.0, 1.0], [2.0] * 3], 0.5),
    "nan_and_inf": ([[math.nan, math.inf, -math.inf, 1.0, 2.0, None] * 20,
                     [math.inf] * 30 + [0.5] * 30], 0.6),
    "only_infinite": ([[math.inf, -math.inf, math.nan] * 10], 0.5),
    "extremes": ([[5e-324, -5e-324, 1.7976931348623157e308, -1.7976931348623157e308,
                   2.2250738585072014e-308] * 30], 0.45),
    "near_neighbours": ([[float(np.nextafter(1.0, 2.0)), 1.0, float(np.nextafter(1.0, 0.0))]
                         * 100], 0.5),
    "negative_heavy_tail": ([list(-np.abs(_RNG.standard_cauchy(400))) for _ in range(3)], 0.05),
}


@pytest.mark.parametrize("case", sorted(_ADVERSARIAL))
def test_adversarial_scores_same_cut(case: str, tmp_path: Path) -> None:
    groups, fraction = _ADVERSARIAL[case]
    # cap 0: four histogram rounds down to one 64-bit key; 3: a few candidates; 2**16: one
    _check_same_cut(groups, fraction, tmp_path, caps=(0, 3, 1 << 16))


def test_random_fractions_and_shards(tmp_path: Path) -> None:
    for seed in range(4):
        rng = np.random.default_rng(seed)
        pool = np.round(rng.normal(size=40), 1)  # few distinct values: ties everywhere
        groups = [[float(v) if rng.random() > 0.1 else None
                   for v in rng.choice(pool, size=int(rng.integers(0, 120)))]
                  for _ in range(int(rng.integers(1, 7)))]
        folder = tmp_path / str(seed)
        folder.mkdir()
        _check_same_cut(groups, float(rng.uniform(1e-6, 1.0)), folder,
                        (int(rng.integers(0, 50)),))


def test_keys_sort_as_ranks_and_round_trip() -> None:
    x = np.concatenate([np.random.default_rng(0).normal(size=2000) * 1e3,
                        [0.0, -0.0, 5e-324, -5e-324, 1.7e308, -1.7e308, math.nan, math.inf]])
    keys = rank_keys(x)
    finite = x[np.isfinite(x)] + 0.0
    assert keys.size == finite.size
    assert np.array_equal(finite[np.argsort(keys, kind="stable")], np.sort(finite))
    assert all(key_rank(int(a)) == b for a, b in zip(keys, finite, strict=True))


def test_driver_data_bounded_whatever_the_corpus(tmp_path: Path) -> None:
    """Per unit, the driver receives a couple of integers; it holds at most one histogram and
    ``max_candidates`` keys, for 300 or 30,000 documents alike."""
    rng = np.random.default_rng(1)
    for n in (300, 30_000):
        scores = list(np.round(rng.normal(size=n), 3))  # ties at the cut at both sizes
        folder = tmp_path / str(n)
        folder.mkdir()
        shards = _shards([scores[s::4] for s in range(4)], folder)
        ex = _Recording()
        stats = cut_top_fraction(_MetaScorer(), shards, str(folder / "work"), "fp", 0.3, ex,
                                 "test", max_candidates=32)
        assert stats is not None
        assert max(ex.sizes) < 100  # one int or a pair of ints per unit
        assert stats.candidates <= 32 and stats.buckets == BUCKETS
        assert stats.fanouts == len(ex.calls) <= 4
        tops, total = score_shards(_MetaScorer(), shards, str(folder / "work"), "fp", 2**62,
                                   LocalExecutor())
        assert read_decision(folder / "work")["threshold"] == global_threshold(
            tops, math.ceil(0.3 * total))


def test_a_killed_cut_resumes_from_its_files(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    shards = _shards([list(rng.normal(size=400)) for _ in range(3)], tmp_path)
    work = str(tmp_path / "work")
    scorer = _MetaScorer()
    with pytest.raises(TaskFailures):
        cut_top_fraction(scorer, shards, work, "fp", 0.25, _Recording(fail=("cut_refine_shard",)),
                         "test", max_candidates=4)
    assert scorer.setups == 3 and read_decision(work) is None
    assert len(list((Path(work) / "cut" / "fp" / "keys").iterdir())) == 3
    again = _MetaScorer()
    cut_top_fraction(again, shards, work, "fp", 0.25, LocalExecutor(), "test", max_candidates=4)
    assert again.setups == 0  # the scores and sorted keys of the first run were reused
    tops, total = score_shards(again, shards, work, "fp", 2**62, LocalExecutor())
    assert read_decision(work)["threshold"] == global_threshold(tops, math.ceil(0.25 * total))
    # a finished decision of the same fingerprint is not recomputed
    ex = _Recording()
    assert cut_top_fraction(again, shards, work, "fp", 0.25, ex, "test") is None
    assert ex.calls == []


def test_on_ray_the_cut_is_the_same(ray_local, real_scores: dict, tmp_path: Path) -> None:
    from pipeline.execution.executor import RayExecutor
    from pipeline.steps.select_top import _FieldScorer

    scores = real_scores["letters"]
    shards = _shards([scores[s::3] for s in range(3)], tmp_path)
    thresholds = []
    for name, ex in (("ray", RayExecutor()), ("local", LocalExecutor())):
        cut_top_fraction(_FieldScorer("score", True), shards, str(tmp_path / name), "fp", 0.2,
                         ex, "test", max_candidates=8)
        thresholds.append(read_decision(tmp_path / name)["threshold"])
    assert thresholds[0] == thresholds[1]
