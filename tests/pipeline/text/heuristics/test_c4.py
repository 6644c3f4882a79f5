"""C4 line and document rules, line by line, on real text, and as the ``c4_v1`` step."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from pipeline.core.document import Document
from pipeline.core.registry import get_step_class
from pipeline.core.step import StepContext, StepStats
from pipeline.text.heuristics import C4Options, C4Rules, c4_clean, c4_quality
from pipeline.text.heuristics.c4 import count_sentences

GOOD = [
    "The river floods the valley every spring.",
    "Farmers plant their rice after the water recedes.",
    "The harvest usually comes in late September!",
]


def _with(line: str) -> str:
    """Three good lines with ``line`` in the middle."""
    return "\n".join([GOOD[0], line, GOOD[1], GOOD[2]])


def _apply(text: str, **options):
    return C4Rules(C4Options(**options)).apply(text)


def test_good_lines_are_kept_verbatim() -> None:
    result = _apply("\n".join(GOOD))
    assert result.reason is None
    assert result.text == "\n".join(GOOD)
    assert result.lines == {"kept": 3}


@pytest.mark.parametrize(
    "line",
    [
        "She said it was over.",
        "Is this the right way?",
        "What a day it was!",
        'He called it "a fine plan for us."',
        "He called it “a fine plan for us”",
        "The sign read ‘closed for the winter’",
        "He called it 'a fine plan for us'",
        "It rained all day in town. [1]",  # the citation is cut first
        "It rained all day in town.[citation needed]",
    ],
)
def test_lines_with_terminal_punctuation_are_kept(line: str) -> None:
    result = _apply(_with(line))
    assert result.reason is None
    assert result.lines["kept"] == 4
    assert "[" not in result.text


@pytest.mark.parametrize(
    "line",
    [
        "Home About Contact Login Sitemap",
        "and then the story went on and on...",
        "and then the story went on and on…",
        "Posted by admin on March 3, 2020",
        "Copyright 2020 all rights reserved -",
        "The list below shows all the items:",
    ],
)
def test_lines_without_terminal_punctuation_are_removed(line: str) -> None:
    result = _apply(_with(line))
    assert result.text == "\n".join(GOOD)
    assert result.lines == {"kept": 3, "no_terminal_punct": 1}


@pytest.mark.parametrize(
    ("line", "kept"),
    [("Four words only here.", False), ("Now five words are here.", True), ("Six words are right here, fine.", True)],
)
def test_min_words_per_line(line: str, kept: bool) -> None:
    result = _apply(_with(line))
    assert (line in result.text.split("\n")) is kept
    if not kept:
        assert result.lines["too_few_words"] == 1


def test_min_words_per_line_option_and_citation_words() -> None:
    assert "Three words here." in _apply(_with("Three words here."), min_words_per_line=3).text
    # words are counted after citations are cut: "[1] [2]" are not words
    assert _apply(_with("Only four words here. [1] [2]")).lines["too_few_words"] == 1


@pytest.mark.parametrize("word", ["javascript", "JavaScript", "JAVASCRIPT"])
def test_javascript_lines_are_removed(word: str) -> None:
    result = _apply(_with(f"Please enable {word} in your browser settings."))
    assert result.text == "\n".join(GOOD)
    assert result.lines["javascript"] == 1


@pytest.mark.parametrize(
    "phrase",
    ["terms of use", "privacy policy", "cookie policy", "uses cookies", "use of cookies", "use cookies"],
)
def test_policy_lines_are_removed(phrase: str) -> None:
    result = _apply(_with(f"By reading on you accept our {phrase.upper()} today."))
    assert result.text == "\n".join(GOOD)
    assert result.lines["policy"] == 1


def test_lorem_ipsum_drops_the_document() -> None:
    assert _apply(_with("Lorem ipsum dolor sit amet, consectetur.")).reason == "c4_lorem_ipsum"
    assert not c4_quality(_with("Lorem ipsum dolor sit amet, consectetur."))
    # as in TFDS, only a line that survived the line rules is inspected
    assert _apply(_with("Lorem ipsum dolor sit amet")).reason is None
    assert _apply(_with("Lorem ipsum dolor sit amet"), filter_lorem_ipsum=False).reason is None


def test_curly_bracket_drops_the_document() -> None:
    assert _apply(_with("The code is function() { return 1; } here.")).reason == "c4_curly_bracket"
    assert _apply(_with("var x = {")).reason is None  # removed by the punctuation rule first
    assert _apply(_with("The set {1, 2} has two items."), filter_curly_bracket=False).reason is None


@pytest.mark.parametrize(("length", "removed"), [(999, False), (1000, False), (1001, True)])
def test_very_long_word_lines_are_removed(length: int, removed: bool) -> None:
    line = "This line has a long word " + "x" * length + " in it."
    result = _apply(_with(line))
    assert (line not in result.text.split("\n")) is removed
    assert result.lines["too_long_word"] == int(removed)


def test_citations_are_cut_unless_disabled() -> None:
    line = "The town was founded in 1888 by settlers.[1][2] It grew fast[edit]."
    assert _apply(_with(line)).text.split("\n")[1] == (
        "The town was founded in 1888 by settlers. It grew fast."
    )
    assert "[1][2]" in _apply(_with(line), remove_citations=False).text


def test_blank_lines_and_indentation() -> None:
    text = "\n\n   " + "\n   \n".join(GOOD) + "   \n\n"
    result = _apply(text)
    assert result.text == "\n".join(GOOD)
    assert result.lines == {"kept": 3}  # blank lines are not counted


# ------------------------------------------------------------------ sentences


@pytest.mark.parametrize(
    ("lines", "reason"),
    [
        (GOOD[:2], "c4_too_few_sentences"),
        (GOOD, None),
        (["The river floods the valley. Farmers plant rice then.", GOOD[2]], None),
        (["Mr. Smith and Dr. Jones met J. R. Tolkien there.", GOOD[2]], "c4_too_few_sentences"),
        (["It was cold, e.g. below zero, in the valley.", GOOD[2]], "c4_too_few_sentences"),
        (["Where is it? Nobody knows the place.", "Nothing else."], "c4_too_few_sentences"),
        (["Where is it? Nobody knows! The map is lost.", "Nothing else."], None),
    ],
)
def test_min_num_sentences(lines: list[str], reason: str | None) -> None:
    assert _apply("\n".join(lines)).reason == reason


def test_count_sentences() -> None:
    assert count_sentences([]) == 0
    assert count_sentences(["One sentence here."]) == 1
    assert count_sentences(['He said "Stop." Then he left. (It was late.) Done!']) == 4
    assert count_sentences(["Prices rose 3.5 percent in the U.S. economy."]) == 1


def test_min_num_sentences_option() -> None:
    assert _apply("\n".join(GOOD), min_num_sentences=5).reason == "c4_too_few_sentences"
    assert _apply(GOOD[0], min_num_sentences=1).reason is None
    assert _apply("no punctuation here", min_num_sentences=None).reason == "c4_empty"


# ------------------------------------------------------------------ real data


def _jsonl_gz(path: Path) -> list[dict]:
    if not path.exists():
        pytest.skip(f"shared data not found at {path}")
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def test_real_wikipedia_article_is_kept_and_cleaned(shared_data: Path) -> None:
    wiki = {d["title"]: d["text"]
            for d in _jsonl_gz(shared_data / "reference" / "wiki_ref.jsonl.gz")}
    text = wiki["District Council of Morgan"]
    cleaned = c4_clean(text)
    assert cleaned is not None and c4_quality(text)
    assert "[1]" in text and "[1]" not in cleaned
    assert "The council was established on 5 January 1888" in cleaned
    assert all(line.rstrip().endswith((".", "!", "?", '"', "'", "”", "’")) for line in cleaned.split("\n"))
    assert len(cleaned) > 0.5 * len(text)


def test_real_spam_with_code_or_no_sentences_is_dropped(shared_data: Path) -> None:
    spam = {d["id"]: d["raw"] for d in _jsonl_gz(shared_data / "noisy" / "spamassassin.jsonl.gz")}
    assert C4Rules().apply(spam["spam-1/00014.7d38c46424f24fc8012ac15a95a2ac14.txt"]).reason == (
        "c4_too_few_sentences"
    )
    dropped = [C4Rules().apply(t).reason for t in list(spam.values())[:300]]
    assert "c4_curly_bracket" in dropped and "c4_too_few_sentences" in dropped


# ------------------------------------------------------------------ step


def test_c4_step_rewrites_text_counts_lines_and_drops() -> None:
    step = get_step_class("c4_v1")()
    kept = Document("kept", _with("Menu Home Contact"))
    clean = Document("clean", "\n".join(GOOD))
    code = Document("code", _with("Call render() { now } please, it works."))
    few = Document("few", GOOD[0] + "\nMenu Home Contact")
    removed: list[tuple[str, str, str, str]] = []
    ctx = StepContext(StepStats(), removed=lambda d, s, r: removed.append((d.id, s, r, d.text)))
    out = list(step.run([kept, clean, code, few], ctx))
    assert [d.id for d in out] == ["kept", "clean"]
    assert out[0].text == "\n".join(GOOD)
    assert ctx.stats.dropped == {"c4_curly_bracket": 1, "c4_too_few_sentences": 1}
    assert removed == [  # with their original text
        ("code", "c4_v1", "c4_curly_bracket", code.text),
        ("few", "c4_v1", "c4_too_few_sentences", GOOD[0] + "\nMenu Home Contact"),
    ]
    assert "render()" in removed[0][3]
    c = ctx.stats.counters  # lines of kept documents only
    assert c["c4_lines_kept"] == 6
    assert c["c4_lines_removed:no_terminal_punct"] == 1
    assert c["c4_lines_removed"] == 1
    assert c["c4_docs_changed"] == 1


def test_c4_step_reject_reason_and_options() -> None:
    cls = get_step_class("c4_v1")
    step = cls(cls.Options(min_words_per_line=3, min_num_sentences=1))
    doc = Document("d", "Short but fine.\nnav")
    assert step.reject_reason(doc) is None
    assert doc.text == "Short but fine."
    with pytest.raises(ValueError):
        cls.Options(min_sentences=3)
