"""``control_shuffle_words_v1`` on real extracted webmix text."""

from __future__ import annotations

import copy
from collections import Counter
from itertools import islice
from pathlib import Path

import pytest

from pipeline.core.step import StepContext, StepStats
from pipeline.io.readers import ReadOptions, read_shard
from pipeline.steps.extract import Extract
from pipeline.steps.shuffle_words import ShuffleWords, ShuffleWordsOptions


@pytest.fixture(scope="module")
def texts(shared_data: Path) -> list:
    path = str(shared_data / "webmix" / "webmix-00001.warc.gz")
    html = list(islice(read_shard(path, "warc", 0, 1, ReadOptions(), StepStats()), 60))
    step = Extract()
    step.setup()
    return list(step.run(html, StepContext(StepStats())))


def test_shuffles_a_seeded_fraction_keeping_the_words(texts: list) -> None:
    step = ShuffleWords(ShuffleWordsOptions(fraction=0.5, seed=3))
    ctx = StepContext(StepStats())
    out = list(step.run(copy.deepcopy(texts), ctx))
    picked = [d.metadata["control_shuffled"] for d in out]
    assert 0.25 * len(out) < sum(picked) < 0.75 * len(out)
    assert ctx.stats.counters["control_docs_shuffled"] == sum(picked)
    for before, after, pick in zip(texts, out, picked, strict=True):
        assert Counter(before.text.split()) == Counter(after.text.split())  # same words
        if pick and len(set(before.text.split())) > 5:
            assert after.text.split() != before.text.split()
        if not pick:
            assert after.text == before.text
    # the choice and the order depend on seed and id only: same again, shard-independent
    again = list(step.run(copy.deepcopy(texts[::-1]), StepContext(StepStats())))[::-1]
    assert [d.text for d in again] == [d.text for d in out]
    other = list(ShuffleWords(ShuffleWordsOptions(fraction=0.5, seed=4)).run(
        copy.deepcopy(texts), StepContext(StepStats())))
    assert [d.metadata["control_shuffled"] for d in other] != picked
    none = list(ShuffleWords(ShuffleWordsOptions(fraction=0.0)).run(
        copy.deepcopy(texts), StepContext(StepStats())))
    assert [d.text for d in none] == [d.text for d in texts]
    with pytest.raises(ValueError):
        ShuffleWordsOptions(fraction=1.5)
