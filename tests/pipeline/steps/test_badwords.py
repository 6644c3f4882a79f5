"""``badwords_v1`` on real webmix pages labelled by ``langid_v2``, with the real LDNOOBW lists."""

from __future__ import annotations

import copy
import pickle
from itertools import islice
from pathlib import Path

import pytest

from pipeline.core.config import JobConfigError, validate_job
from pipeline.core.document import Document
from pipeline.core.registry import get_step_class
from pipeline.core.step import StepCheckError, StepContext, StepStats
from pipeline.text.badwords import BadWords
from pipeline.text.corpus import iter_warc_records


@pytest.fixture(scope="module")
def lists(shared_data: Path) -> str:
    return str(shared_data / "lists" / "ldnoobw")


@pytest.fixture(scope="module")
def pages(shared_data: Path) -> list[Document]:
    """250 webmix pages (shard 2) with ``language`` from ``langid_v2`` (no language dropped)."""
    path = str(shared_data / "webmix" / "webmix-00002.warc.gz")
    docs = [Document(f"d{i}", text, url) for i, (url, text)
            in enumerate(islice(iter_warc_records(path), 250))]
    cls = get_step_class("langid_v2")
    langid = cls(cls.Options(languages=None, threshold=0.0))
    langid.setup()
    out = list(langid.run(docs, StepContext(StepStats())))
    assert len(out) == len(docs)
    return out


def _run(docs: list[Document], **options) -> tuple[list[Document], list, StepStats]:
    cls = get_step_class("badwords_v1")
    step = cls(cls.Options(**options))
    step.check()
    removed: list = []
    ctx = StepContext(StepStats(), lambda d, s, r: removed.append((d, r)))
    kept = list(step.run([copy.deepcopy(d) for d in docs], ctx))
    return kept, removed, ctx.stats


def test_c4_rule_drops_every_page_with_a_match(pages: list[Document], lists: str) -> None:
    kept, removed, stats = _run(pages, lists=lists)
    reference = BadWords(lists)
    for doc in kept + [d for d, _ in removed]:
        expect = reference.count(doc.text, doc.metadata["language"])
        assert doc.metadata["badwords_count"] == expect
    assert removed and all(r == "badwords" for _, r in removed)
    assert all(d.metadata["badwords_count"] > 0 for d, _ in removed)
    for doc, reason in removed:  # the rejection says what was measured against what
        assert (reason.value, reason.threshold, reason.op, reason.metric) == (
            doc.metadata["badwords_count"], 0, ">", "badwords_count")
    assert all(not d.metadata["badwords_count"] for d in kept)
    assert stats.dropped["badwords"] == len(removed)
    languages = {d.metadata["language"] for d in pages}
    assert len(languages) > 5  # English, German, UDHR translations...
    matched = sum(v for k, v in stats.counters.items() if k.startswith("matched:"))
    assert matched == len(removed)
    no_list = sum(v for k, v in stats.counters.items() if k.startswith("no_list:"))
    assert no_list == sum(d.metadata["badwords_count"] is None for d in kept)
    assert no_list > 0  # UDHR languages without a list are kept unchecked


def test_threshold_and_annotate_only(pages: list[Document], lists: str) -> None:
    kept0, removed0, _ = _run(pages, lists=lists)
    kept2, removed2, _ = _run(pages, lists=lists, max_matches=2)
    assert {d.id for d, _ in removed2} == {d.id for d, _ in removed0
                                           if d.metadata["badwords_count"] > 2}
    assert len(removed2) < len(removed0)
    annotated, removed, _ = _run(pages, lists=lists, max_matches=None)
    assert not removed and len(annotated) == len(pages)
    counts = {d.id: d.metadata["badwords_count"] for d in kept0 + [d for d, _ in removed0]}
    assert {d.id: d.metadata["badwords_count"] for d in annotated} == counts


def test_documents_without_language(pages: list[Document], lists: str) -> None:
    english = [d for d in pages if d.metadata["language"] == "en"][:40]
    bare = [Document(d.id, d.text, d.url) for d in english]
    _, removed_default, stats = _run(bare, lists=lists)
    _, removed_en, _ = _run(english, lists=lists)
    assert [d.id for d, _ in removed_default] == [d.id for d, _ in removed_en]
    assert stats.counters["no_language"] == len(bare)
    kept, removed, stats = _run(bare, lists=lists, default_language=None)
    assert not removed and all(d.metadata["badwords_count"] is None for d in kept)
    assert stats.counters["no_language"] == len(bare) and not any(
        k.startswith("no_list:") for k in stats.counters)


def test_pickles_after_setup(pages: list[Document], lists: str) -> None:
    cls = get_step_class("badwords_v1")
    step = cls(cls.Options(lists=lists))
    step.setup()
    clone = pickle.loads(pickle.dumps(step))
    assert clone._lists is None  # automata are rebuilt in the worker, not pickled
    docs = [copy.deepcopy(d) for d in pages[:30]]
    assert [clone.reject_reason(d) for d in docs] == [step.reject_reason(d) for d in docs]


def test_check_reports_bad_options_in_one_line(tmp_path: Path, lists: str,
                                               shared_data: Path) -> None:
    cls = get_step_class("badwords_v1")
    with pytest.raises(StepCheckError, match="folder 'nowhere/ldnoobw' does not exist"):
        cls(cls.Options(lists="nowhere/ldnoobw")).check()
    with pytest.raises(StepCheckError, match="has no CODE.json lists"):
        cls(cls.Options(lists=str(tmp_path))).check()
    with pytest.raises(StepCheckError, match="'gsw' has no list"):
        cls(cls.Options(lists=lists, default_language="gsw")).check()
    (tmp_path / "en.json").write_text("[broken", encoding="utf-8")
    with pytest.raises(StepCheckError, match="en.json: not a JSON word list"):
        cls(cls.Options(lists=str(tmp_path))).check()
    job = {"inputs": [str(shared_data / "webmix" / "webmix-00000.warc.gz")], "output": "o",
           "steps": [{"extract_v1": {}}, {"badwords_v1": {"lists": "missing"}}]}
    with pytest.raises(JobConfigError) as e:
        validate_job(job)
    assert str(e.value).startswith("steps[1].badwords_v1.lists: folder 'missing' does not exist")
    assert "\n" not in str(e.value)
