"""Gopher quality and repetition rules: every threshold at, just inside and just outside."""

from __future__ import annotations

import gzip
import json
import random
from collections import Counter
from pathlib import Path

import pytest

from pipeline.core.document import Document
from pipeline.core.registry import get_step_class
from pipeline.core.step import StepContext, StepStats
from pipeline.text.heuristics import (
    GopherQuality,
    GopherQualityOptions,
    GopherRepetition,
    GopherRepetitionOptions,
    gopher_quality,
    gopher_quality_reason,
    gopher_repetition,
    gopher_repetition_reason,
)
from pipeline.text.heuristics.gopher_repetition import (
    NGramIndex,
    duplicate_n_gram_chars,
    top_n_gram_chars,
)


def _jsonl_gz(path: Path) -> list[dict]:
    if not path.exists():
        pytest.skip(f"shared data not found at {path}")
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f]


@pytest.fixture(scope="module")
def wiki(shared_data: Path) -> dict[str, str]:
    return {d["title"]: d["text"]
            for d in _jsonl_gz(shared_data / "reference" / "wiki_ref.jsonl.gz")}


@pytest.fixture(scope="module")
def spam(shared_data: Path) -> dict[str, str]:
    return {d["id"]: d["raw"] for d in _jsonl_gz(shared_data / "noisy" / "spamassassin.jsonl.gz")}


def _doc(n_words: int, filler: str = "apple") -> str:
    """A clean one-line document of ``n_words`` words: two stop words, then fillers."""
    return " ".join(["the", "have"] + [filler] * (n_words - 2))


# ------------------------------------------------------------------ quality: word count


@pytest.mark.parametrize(("n", "reason"), [(49, "gopher_short_doc"), (50, None), (51, None)])
def test_min_words_boundary(n: int, reason: str | None) -> None:
    assert gopher_quality_reason(_doc(n)) == reason


@pytest.mark.parametrize(
    ("n", "reason"), [(99_999, None), (100_000, None), (100_001, "gopher_long_doc")]
)
def test_max_words_boundary(n: int, reason: str | None) -> None:
    assert gopher_quality_reason(_doc(n)) == reason


def test_symbol_only_tokens_are_not_words() -> None:
    # 49 words plus dashes and bullets: still 49 words
    text = _doc(49) + " - | -- … •"
    assert gopher_quality_reason(text) == "gopher_short_doc"
    assert gopher_quality(_doc(50) + " - |")


# ------------------------------------------------------------------ quality: word length


def _length_doc(total_chars: int, n: int = 50) -> str:
    """``n`` words totalling ``total_chars`` letters: 'the', 'and', then 3-letter fillers,
    the last word padded or cut to reach the total."""
    words = ["the", "and"] + ["cat"] * (n - 3)
    last = total_chars - sum(map(len, words))
    assert last >= 1
    return " ".join([*words, "z" * last])


@pytest.mark.parametrize(
    ("chars", "reason"),
    [(149, "gopher_below_avg_word_len"), (150, None), (151, None)],  # mean 2.98 / 3.0 / 3.02
)
def test_min_mean_word_length_boundary(chars: int, reason: str | None) -> None:
    # 'cat' fillers (3) and a last word of 2, 3 or 4 letters
    assert gopher_quality_reason(_length_doc(chars)) == reason


@pytest.mark.parametrize(
    ("chars", "reason"),
    [(499, None), (500, None), (501, "gopher_above_avg_word_len")],  # mean 9.98 / 10 / 10.02
)
def test_max_mean_word_length_boundary(chars: int, reason: str | None) -> None:
    words = ["the", "and"] + ["abcdefghij"] * 47  # 6 + 470 characters, 49 words
    text = " ".join([*words, "q" * (chars - 476)])
    assert gopher_quality_reason(text) == reason


def test_edge_punctuation_does_not_count_in_word_length() -> None:
    text = " ".join(["(the),"] * 25 + ['"cat".'] * 25)  # mean length 3 once stripped
    assert gopher_quality_reason(text) is None
    assert gopher_quality_reason(" ".join(["the"] * 25 + ["at"] * 25)) == (
        "gopher_below_avg_word_len"
    )


# ------------------------------------------------------------------ quality: symbols


@pytest.mark.parametrize(
    ("n_hash", "reason"), [(9, None), (10, None), (11, "gopher_too_many_hashes")]
)
def test_hash_ratio_boundary(n_hash: int, reason: str | None) -> None:
    words = ["the", "have"] + ["#apple"] * n_hash + ["apple"] * (98 - n_hash)  # 100 words
    assert gopher_quality_reason(" ".join(words)) == reason


@pytest.mark.parametrize("mark", ["...", "…"])
@pytest.mark.parametrize(("n", "reason"), [(9, None), (10, None), (11, "gopher_too_many_ellipsis")])
def test_ellipsis_ratio_boundary(mark: str, n: int, reason: str | None) -> None:
    words = ["the", "have"] + [f"apple{mark}"] * n + ["apple"] * (98 - n)  # ends in 'apple'
    assert gopher_quality_reason(" ".join(words)) == reason


# ------------------------------------------------------------------ quality: lines


@pytest.mark.parametrize("bullet", ["-", "•", "*"])
@pytest.mark.parametrize(
    ("n_bullets", "reason"), [(17, None), (18, None), (19, "gopher_too_many_bullets")]
)
def test_bullet_lines_boundary(bullet: str, n_bullets: int, reason: str | None) -> None:
    # 20 lines; 18 of 20 is exactly 90 %
    lines = [f"{bullet} the apple have fine words" if i < n_bullets else "the apple have fine words"
             for i in range(20)]
    assert gopher_quality_reason("\n".join(lines)) == reason


@pytest.mark.parametrize(
    ("n_ellipsis", "reason"), [(29, None), (30, None), (31, "gopher_too_many_end_ellipsis")]
)
def test_ellipsis_lines_boundary(n_ellipsis: int, reason: str | None) -> None:
    lines = [
        "the apple went home" + ("..." if i < n_ellipsis else ".") for i in range(100)
    ]
    assert gopher_quality_reason("\n".join(lines)) == reason
    # blank lines are not lines: interleaving them changes nothing
    assert gopher_quality_reason("\n\n  \n".join(lines)) == reason


def test_ellipsis_line_with_trailing_space_counts() -> None:
    lines = ["the apple went home …  " if i < 31 else "the apple went home." for i in range(100)]
    assert gopher_quality_reason("\n".join(lines)) == "gopher_too_many_end_ellipsis"


# ------------------------------------------------------------------ quality: alphabetic words


@pytest.mark.parametrize(
    ("n_alpha", "reason"), [(79, "gopher_below_alpha_threshold"), (80, None), (81, None)]
)
def test_alpha_words_boundary(n_alpha: int, reason: str | None) -> None:
    words = ["the", "have"] + ["apple"] * (n_alpha - 2) + ["1990"] * (100 - n_alpha)
    assert gopher_quality_reason(" ".join(words)) == reason


def test_symbol_tokens_count_against_alpha_ratio() -> None:
    words = ["the", "have"] + ["apple"] * 77 + ["|"] * 21  # 79 of 100 tokens alphabetic
    assert gopher_quality_reason(" ".join(words)) == "gopher_below_alpha_threshold"
    assert gopher_quality_reason(" ".join(["The", "cafés", "naïve"] * 30)) is None


# ------------------------------------------------------------------ quality: stop words


@pytest.mark.parametrize(
    ("stops", "reason"),
    [(["the"], "gopher_too_few_stop_words"), (["the", "of"], None), (["the", "of", "and"], None)],
)
def test_stop_words_boundary(stops: list[str], reason: str | None) -> None:
    words = stops + ["apple"] * (60 - len(stops))
    assert gopher_quality_reason(" ".join(words)) == reason


def test_stop_words_are_whole_words_any_case_counted_with_repetition() -> None:
    base = ["apple"] * 60
    assert gopher_quality_reason(" ".join(["theory", "bother", "tooth", *base])) == (
        "gopher_too_few_stop_words"
    )
    assert gopher_quality_reason(" ".join(["The", "(THE)", *base])) is None  # same word twice


# ------------------------------------------------------------------ quality: options


def test_options_change_and_disable_rules() -> None:
    strict = GopherQuality(GopherQualityOptions(min_words=100))
    assert strict.reject_reason(_doc(99)) == "gopher_short_doc"
    assert strict.reject_reason(_doc(100)) is None
    no_stop = GopherQuality(GopherQualityOptions(min_stop_words=None))
    assert no_stop.reject_reason(" ".join(["apple"] * 60)) is None
    custom = GopherQuality(GopherQualityOptions(stop_words=["der", "die", "das"]))
    assert custom.reject_reason(" ".join(["der", "die"] + ["Apfel"] * 60)) is None
    assert custom.reject_reason(_doc(60)) == "gopher_too_few_stop_words"
    with pytest.raises(ValueError):
        GopherQualityOptions(min_wrods=3)  # type: ignore[call-arg]
    with pytest.raises(ValueError):
        GopherQualityOptions(max_bullet_lines_ratio=1.5)


def test_empty_and_whitespace_documents_are_short() -> None:
    assert gopher_quality_reason("") == "gopher_short_doc"
    assert gopher_quality_reason(" \n\t ") == "gopher_short_doc"
    disabled = GopherQuality(GopherQualityOptions(min_words=None))
    assert disabled.reject_reason("") == "gopher_short_doc"  # no words: nothing to measure


# ------------------------------------------------------------------ quality: real data


def test_real_wikipedia_articles_pass(wiki: dict[str, str]) -> None:
    for title in ("District Council of Morgan", "Citrix Cloud", "Ein Netafim ambush"):
        assert gopher_quality(wiki[title]), title
        assert gopher_repetition(wiki[title]), title
    texts = list(wiki.values())[:200]
    assert sum(map(gopher_quality, texts)) / len(texts) > 0.7


def test_real_spam_fails(spam: dict[str, str]) -> None:
    table_spam = spam["spam-1/00014.7d38c46424f24fc8012ac15a95a2ac14.txt"]  # HTML tables
    assert gopher_quality_reason(table_spam) == "gopher_above_avg_word_len"
    assert gopher_repetition_reason(table_spam) == "gopher_top_2_gram"
    headers = spam["spam-1/00002.d94f1b97e48ed3b553b3508d116e6a09.txt"]
    assert gopher_quality_reason(headers) == "gopher_below_alpha_threshold"
    nav = "\n".join(["Home", "About us", "Contact", "Login", "Sitemap", "Products"] * 5)
    assert not gopher_quality(nav)
    assert not gopher_repetition(nav)


# ------------------------------------------------------------------ repetition helpers


def _unique_words(n: int, start: int = 0) -> list[str]:
    """Distinct 5-letter words: no n-gram of them repeats."""
    return [f"w{i:04d}" for i in range(start, start + n)]


_NO_NGRAMS = {"top_n_grams": {}, "dup_n_grams": {}}


def _repetition(**options) -> GopherRepetition:
    return GopherRepetition(GopherRepetitionOptions(**options))


# ------------------------------------------------------------------ repetition: lines


@pytest.mark.parametrize(("dups", "reason"), [(29, None), (30, None), (31, "gopher_dup_line_frac")])
def test_duplicate_line_fraction_boundary(dups: int, reason: str | None) -> None:
    # 100 lines: 'Read more.' occurs dups + 1 times, interleaved with unique long lines
    unique = [" ".join(_unique_words(8, 8 * i)) for i in range(99 - dups)]
    lines = unique + ["Read more."] * (dups + 1)
    random.Random(dups).shuffle(lines)
    text = "\n".join(lines)
    assert len(lines) == 100
    assert GopherRepetition().reject_reason(text) == reason


def _char_frac_text(sep: str, extra: int) -> str:
    """Two copies of a 100-character block plus two unique blocks; the duplicate's 100
    characters are exactly 20 % of the text when ``extra`` is 0."""
    block = "x" * 100
    a = "a" * 100
    b = "b" * (500 - 300 - 3 * len(sep) + extra)
    return sep.join([block, a, block, b])


@pytest.mark.parametrize(
    ("extra", "reason"), [(1, None), (0, None), (-1, "gopher_dup_line_char_frac")]
)
def test_duplicate_line_char_fraction_boundary(extra: int, reason: str | None) -> None:
    text = _char_frac_text("\n", extra)
    assert len(text) == 500 + extra
    assert _repetition(**_NO_NGRAMS).reject_reason(text) == reason


@pytest.mark.parametrize(
    ("extra", "reason"), [(1, None), (0, None), (-1, "gopher_dup_para_char_frac")]
)
def test_duplicate_paragraph_char_fraction_boundary(extra: int, reason: str | None) -> None:
    text = _char_frac_text("\n\n", extra)
    assert len(text) == 500 + extra
    assert _repetition(**_NO_NGRAMS).reject_reason(text) == reason


@pytest.mark.parametrize(("dups", "reason"), [(29, None), (30, None), (31, "gopher_dup_para_frac")])
def test_duplicate_paragraph_fraction_boundary(dups: int, reason: str | None) -> None:
    # each paragraph has two lines, so the paragraph repeats but the line rules stay quiet
    unique = [
        " ".join(_unique_words(6, 12 * i)) + "\n" + " ".join(_unique_words(6, 12 * i + 6))
        for i in range(99 - dups)
    ]
    paragraphs = unique + ["Share this.\nRead more."] * (dups + 1)
    random.Random(dups).shuffle(paragraphs)
    rules = _repetition(dup_line_frac=None, dup_line_char_frac=None, **_NO_NGRAMS)
    assert rules.reject_reason("\n\n".join(paragraphs)) == reason


def test_paragraphs_and_lines_compare_stripped() -> None:
    text = "  same line  \nsame line\n\n\nother words here\n"
    rules = _repetition(**_NO_NGRAMS)
    assert rules.reject_reason(text) == "gopher_dup_line_frac"  # 1 duplicate of 3 lines


# ------------------------------------------------------------------ repetition: n-grams


def _top_gram_text(gram: list[str], count: int, filler_chars: int) -> str:
    """``gram`` ``count`` times, each between unique 5-letter fillers totalling
    ``filler_chars`` characters (one filler may be shorter)."""
    n_fill, rest = divmod(filler_chars, 5)
    fillers = _unique_words(n_fill)
    if rest:
        fillers.append("y" * rest)
    words: list[str] = []
    per_gap = len(fillers) // count
    for i in range(count):
        words += fillers[i * per_gap : (i + 1) * per_gap] + gram
    words += fillers[count * per_gap :]
    return " ".join(words)


@pytest.mark.parametrize(
    ("n", "gram", "count", "filler_at"),
    [
        (2, ["ab", "cd"], 10, 160),  # 40 / 200 = 0.20
        (3, ["aa", "bb", "cc"], 15, 410),  # 90 / 500 = 0.18
        (4, ["aa", "bb", "cc", "dd"], 10, 420),  # 80 / 500 = 0.16
    ],
)
@pytest.mark.parametrize("delta", [1, 0, -1])
def test_top_n_gram_boundary(n: int, gram: list[str], count: int, filler_at: int, delta: int) -> None:
    text = _top_gram_text(gram, count, filler_at + delta)
    words = text.split()
    index = NGramIndex(words)
    assert top_n_gram_chars(index, n) == count * sum(map(len, gram))
    expected = f"gopher_top_{n}_gram" if delta < 0 else None
    assert GopherRepetition().reject_reason(text) == expected


@pytest.mark.parametrize(
    ("n", "threshold"), [(5, 0.15), (6, 0.14), (7, 0.13), (8, 0.12), (9, 0.11), (10, 0.10)]
)
@pytest.mark.parametrize("delta", [5, 0, -5])
def test_duplicate_n_gram_boundary(n: int, threshold: float, delta: int) -> None:
    # a passage of 5-letter words occurs twice; its second copy, threshold * 1000
    # characters, is the duplicate in 1000 word characters (+/- one 5-letter filler)
    dup_chars = round(threshold * 1000)
    passage = [f"p{i:03d}a" for i in range(dup_chars // 5)]
    filler = _unique_words((1000 - 2 * dup_chars + delta) // 5)
    words = filler[: len(filler) // 2] + passage + filler[len(filler) // 2 :] + passage
    assert sum(map(len, words)) == 1000 + delta
    assert duplicate_n_gram_chars(NGramIndex(words), n) == dup_chars
    rules = _repetition(dup_n_grams={n: threshold})
    expected = f"gopher_dup_{n}_gram" if delta < 0 else None
    assert rules.reject_reason(" ".join(words)) == expected


def test_default_duplicate_n_gram_rule_reports_the_smallest_failing_n() -> None:
    passage = [f"p{i:03d}a" for i in range(20)]
    filler = _unique_words(100)
    text = " ".join(filler[:50] + passage + filler[50:] + passage)  # 100 / 700 = 0.143
    assert gopher_repetition_reason(text) == "gopher_dup_6_gram"  # 0.143 <= 0.15, > 0.14


def test_overlapping_duplicates_count_once() -> None:
    # 'a b c d e f' three times: every 5-gram after the first copy repeats; the covered
    # words are the last two copies, counted once each although 5-grams overlap
    words = "a b c d e f a b c d e f a b c d e f".split()
    index = NGramIndex(words)
    assert duplicate_n_gram_chars(index, 5) == 12
    assert duplicate_n_gram_chars(index, 6) == 12
    assert duplicate_n_gram_chars(index, 7) == 12  # 'a..f a' repeats from position 6
    assert duplicate_n_gram_chars(index, 13) == 0  # 13-grams start at 0..5: all distinct
    # a run of one word: each 5-gram from the second on repeats the first
    run = ["na"] * 20
    assert duplicate_n_gram_chars(NGramIndex(run), 5) == 2 * 19  # all but the first word


def _brute_dup(words: list[str], n: int) -> int:
    seen: set[tuple[str, ...]] = set()
    covered: set[int] = set()
    for i in range(len(words) - n + 1):
        gram = tuple(words[i : i + n])
        if gram in seen:
            covered.update(range(i, i + n))
        seen.add(gram)
    return sum(len(words[i]) for i in covered)


def _brute_top(words: list[str], n: int) -> int:
    grams = [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
    if not grams:
        return 0
    counts = Counter(grams)
    best = max(counts.values())
    first = next(g for g in grams if counts[g] == best)
    return best * sum(map(len, first))


def _brute_reason(text: str, o: GopherRepetitionOptions) -> str | None:
    """A direct, slow transcription of the rules (no early exits or bounds)."""
    import re

    for name, parts, frac, char_frac in (
        ("para", re.split(r"\n\s*\n", text), o.dup_para_frac, o.dup_para_char_frac),
        ("line", text.split("\n"), o.dup_line_frac, o.dup_line_char_frac),
    ):
        items = [p.strip() for p in parts if p.strip()]
        if not items:
            continue
        seen: set[str] = set()
        dups = dup_chars = 0
        for item in items:
            if item in seen:
                dups += 1
                dup_chars += len(item)
            seen.add(item)
        if frac is not None and dups / len(items) > frac:
            return f"gopher_dup_{name}_frac"
        if char_frac is not None and dup_chars / len(text) > char_frac:
            return f"gopher_dup_{name}_char_frac"
    words = text.split()
    total = sum(map(len, words))
    if not total:
        return None
    for n, t in sorted(o.top_n_grams.items()):
        if _brute_top(words, n) / total > t:
            return f"gopher_top_{n}_gram"
    for n, t in sorted(o.dup_n_grams.items()):
        if _brute_dup(words, n) / total > t:
            return f"gopher_dup_{n}_gram"
    return None


def test_n_gram_statistics_match_brute_force() -> None:
    rng = random.Random(7)
    for _ in range(400):
        vocab = ["a", "bb", "ccc", "dddd", "eeeee", "ff"][: rng.randint(1, 6)]
        words = [rng.choice(vocab) for _ in range(rng.randint(0, 45))]
        index = NGramIndex(words)
        sizes = list(range(1, 12))
        rng.shuffle(sizes)  # levels built in any order reuse each other
        for n in sizes:
            assert duplicate_n_gram_chars(index, n) == _brute_dup(words, n), (words, n)
            assert top_n_gram_chars(index, n) == _brute_top(words, n), (words, n)


def test_rule_order_and_early_exits_match_brute_force() -> None:
    rng = random.Random(11)
    options = [
        GopherRepetitionOptions(),
        GopherRepetitionOptions(dup_line_frac=None, dup_para_frac=None, dup_line_char_frac=None,
                                dup_para_char_frac=None),
        GopherRepetitionOptions(top_n_grams={2: 0.5, 4: 0.3}, dup_n_grams={5: 0.6, 7: 0.3, 10: 0.4}),
        GopherRepetitionOptions(top_n_grams={}, dup_n_grams={3: 0.5, 6: 0.35, 8: 0.2}),
    ]
    seen_reasons: Counter = Counter()
    for _ in range(600):
        vocab = [f"w{i}" * rng.randint(1, 3) for i in range(rng.randint(2, 60))]
        pool = [
            " ".join(rng.choice(vocab) for _ in range(rng.randint(1, 8)))
            for _ in range(rng.randint(1, 12))
        ]
        lines = [rng.choice(pool) for _ in range(rng.randint(1, 12))]
        text = rng.choice(["\n", "\n\n", "\n \n"]).join(lines)
        for o in options:
            expected = _brute_reason(text, o)
            assert GopherRepetition(o).reject_reason(text) == expected, (text, o)
            seen_reasons[expected] += 1
    assert len(seen_reasons) >= 10  # the random documents exercise many rules


def test_repetition_edge_cases() -> None:
    assert gopher_repetition("")
    assert gopher_repetition("   \n\n  ")
    assert gopher_repetition("one")
    assert not gopher_repetition("spam " * 200)
    with pytest.raises(ValueError):
        GopherRepetitionOptions(dup_n_grams={0: 0.1})
    with pytest.raises(ValueError):
        GopherRepetitionOptions(top_n_grams={2: 1.5})


# ------------------------------------------------------------------ steps


def test_gopher_steps_drop_with_reasons_and_keep_text() -> None:
    quality = get_step_class("gopher_quality_v1")()
    repetition = get_step_class("gopher_repetition_v1")(GopherRepetitionOptions(dup_line_frac=0.1))
    prose = " ".join(["the", "have", *_unique_words(78)]) + "."
    good = Document("good", prose)
    short = Document("short", "Too short.")
    repeated = Document("rep", "\n".join(["the apple has many fine words in it today"] * 3 + [_doc(60)]))
    removed: list[tuple[str, str, str]] = []
    ctx = StepContext(StepStats(), removed=lambda d, s, r: removed.append((d.id, s, r)))
    out = list(quality.run([good, short, repeated], ctx))
    assert [d.id for d in out] == ["good", "rep"]
    assert out[0].text == prose
    assert ctx.stats.dropped == {"gopher_short_doc": 1}
    assert removed == [("short", "gopher_quality_v1", "gopher_short_doc")]

    ctx2 = StepContext(StepStats())
    assert [d.id for d in repetition.run(out, ctx2)] == ["good"]
    assert ctx2.stats.dropped == {"gopher_dup_line_frac": 1}


def test_step_options_are_validated_by_name() -> None:
    cls = get_step_class("gopher_quality_v1")
    assert cls.Options(min_words=10).min_words == 10
    with pytest.raises(ValueError):
        cls.Options(min_words="many")
    rep = get_step_class("gopher_repetition_v1")
    assert rep.Options(dup_n_grams={5: 0.2}).dup_n_grams == {5: 0.2}


def test_pathological_inputs_stay_fast() -> None:
    import time

    from pipeline.text.heuristics import C4Rules

    texts = [
        "a" + "!" * 500_000,  # one huge token that backtracks
        "-" * 500_000,
        "[" * 500_000 + ".",
        "the " * 150_000,
        "a b c d e f g h i j k " * 50_000,
        "\n" * 500_000,
        "... " * 150_000,
    ]
    start = time.process_time()
    reasons = [
        (gopher_quality_reason(t), gopher_repetition_reason(t), C4Rules().apply(t).reason)
        for t in texts
    ]
    assert time.process_time() - start < 10  # about 0.5 s
    assert reasons[0][0] == "gopher_short_doc"
    assert reasons[3][:2] == ("gopher_long_doc", "gopher_top_2_gram")
    assert reasons[4][1] == "gopher_top_3_gram"
