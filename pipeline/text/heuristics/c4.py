"""C4 line and document rules (Raffel et al. 2020, section 2.2), as built by TFDS ``c4_utils``.

Each line is stripped, then, in the order of the reference code (TFDS ``clean_page``):

1. a line with a word longer than ``max_word_length`` (1000) characters is removed;
2. Wikipedia-style citation marks (``[1]``, ``[edit]``, ``[citation needed]``) are cut;
3. a line not ending in terminal punctuation (``. ! ? "`` or a closing quote ``' ” ’``),
   or ending in ``...``, is removed;
4. a line with fewer than ``min_words_per_line`` (5) words is removed;
5. a line containing "lorem ipsum" drops the whole document;
6. a line containing "javascript" is removed;
7. a line containing ``{`` drops the whole document;
8. a line containing a cookie / terms-of-use phrase is removed.

The document is dropped when the kept lines hold fewer than ``min_num_sentences`` (3)
sentences; otherwise its text becomes the kept lines joined by ``\\n``. The paper says
"fewer than 3 sentences" and "at least 5 words" per line, and TFDS uses
``_MIN_NUM_SENTENCES = 3`` and ``_MIN_WORDS_PER_LINE = 5``; datatrove's C4QualityFilter
swaps the two (5 sentences, 3 words). Rules 5 and 7 look only at lines that survived rules
1-4, as in TFDS. The bad-words rule is not implemented.

Sentences are counted without NLTK punkt: each kept line ends one sentence, and a
``. ! ?`` (optionally followed by closing quotes or brackets) followed by a space and a
word that does not start in lower case ends another, unless the period follows a
one-letter initial or a title (Mr, Mrs, Ms, Dr, Prof, St, Jr, Sr, vs).
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from functools import cache

from pydantic import Field

from pipeline.core.step import Rejection, StepOptions

CITATION_RE = re.compile(r"\[\d*\]|\[edit\]|\[citation needed\]", re.IGNORECASE)
END_MARKS: tuple[str, ...] = (".", "!", "?", '"', "'", "”", "’")
POLICY_SUBSTRINGS: tuple[str, ...] = (
    "terms of use",
    "privacy policy",
    "cookie policy",
    "uses cookies",
    "use of cookies",
    "use cookies",
)
#: a sentence end inside a line: the next word on the same line does not start lower-case
_INNER_SENTENCE_END_RE = re.compile(
    r"(?:[!?]|\.(?<!\b[A-Z]\.)(?<!\bMr\.)(?<!\bMs\.)(?<!\bDr\.)(?<!\bSt\.)(?<!\bJr\.)"
    r"(?<!\bSr\.)(?<!\bvs\.)(?<!\bMrs\.)(?<!\bProf\.))[.!?]*[\"'”’)\]]*(?=[^\S\n]+(?![a-z])\S)"
)


class C4Options(StepOptions):
    """Switches and limits of the C4 rules; a limit of ``None`` disables its rule."""

    remove_citations: bool = Field(True, description="cut [1], [edit], [citation needed]")
    filter_no_terminal_punct: bool = Field(True, description="remove lines without an end mark")
    min_words_per_line: int | None = Field(5, ge=0, description="remove shorter lines")
    min_num_sentences: int | None = Field(3, ge=0, description="drop documents with fewer")
    max_word_length: int | None = Field(1000, ge=1, description="remove lines with a longer word")
    filter_lorem_ipsum: bool = Field(True, description="drop documents with 'lorem ipsum'")
    filter_javascript: bool = Field(True, description="remove lines mentioning javascript")
    filter_curly_bracket: bool = Field(True, description="drop documents with '{'")
    filter_policy: bool = Field(True, description="remove cookie / terms-of-use lines")


@dataclass(slots=True)
class C4Result:
    """What the C4 rules did to one document.

    ``text`` is the cleaned text (the kept lines) or ``None`` when the document is
    dropped, with ``reason`` saying why. ``lines`` counts line outcomes: ``kept`` and
    one key per removal rule (``no_terminal_punct``, ``too_few_words``, ``javascript``,
    ``policy``, ``too_long_word``). Blank lines are not counted.
    """

    text: str | None
    reason: str | None
    lines: Counter


def count_sentences(lines: list[str]) -> int:
    """Return the approximate number of sentences in ``lines`` (each line ends one)."""
    if not lines:
        return 0
    return len(lines) + len(_INNER_SENTENCE_END_RE.findall("\n".join(lines)))


class C4Rules:
    """The C4 rules with fixed options; :meth:`apply` cleans or drops one text."""

    def __init__(self, options: C4Options | None = None) -> None:
        self.options = options if options is not None else C4Options()

    def apply(self, text: str, trace: list[tuple[str, str | None]] | None = None) -> C4Result:
        """Return the cleaned text, or ``None`` and a reason when the document is dropped.

        Reasons: ``c4_lorem_ipsum``, ``c4_curly_bracket``, ``c4_too_few_sentences`` (a
        :class:`~pipeline.core.step.Rejection` with the sentence count), and ``c4_empty``
        (no line kept while ``min_num_sentences`` is off). When ``trace`` is a list, each
        non-blank input line is appended to it with the rule that removed it (``None``: kept).
        """
        o = self.options
        max_word = o.max_word_length
        min_words = o.min_words_per_line or 0
        counts: Counter = Counter()
        kept: list[str] = []
        for raw in text.splitlines():
            line = raw.strip()
            if not line:
                continue
            if max_word is not None and len(line) > max_word:
                if max(map(len, line.split())) > max_word:
                    counts["too_long_word"] += 1
                    if trace is not None:
                        trace.append((line, "too_long_word"))
                    continue
            if o.remove_citations and "[" in line:
                line = CITATION_RE.sub("", line).rstrip()
            if o.filter_no_terminal_punct and (
                not line.endswith(END_MARKS) or line.endswith("...")
            ):
                counts["no_terminal_punct"] += 1
                if trace is not None:
                    trace.append((line, "no_terminal_punct"))
                continue
            if min_words and len(line.split(None, min_words)) < min_words:
                counts["too_few_words"] += 1
                if trace is not None:
                    trace.append((line, "too_few_words"))
                continue
            lower = line.lower()
            if o.filter_lorem_ipsum and "lorem ipsum" in lower:
                return C4Result(None, Rejection("c4_lorem_ipsum", line[:200], "lorem ipsum",
                                                "contains", "line"), counts)
            if o.filter_javascript and "javascript" in lower:
                counts["javascript"] += 1
                if trace is not None:
                    trace.append((line, "javascript"))
                continue
            if o.filter_curly_bracket and "{" in line:
                return C4Result(None, Rejection("c4_curly_bracket", line[:200], "{", "contains",
                                                "line"), counts)
            if (
                o.filter_policy
                and ("cookie" in lower or "policy" in lower or "terms of use" in lower)
                and any(p in lower for p in POLICY_SUBSTRINGS)
            ):
                counts["policy"] += 1
                if trace is not None:
                    trace.append((line, "policy"))
                continue
            kept.append(line)
            if trace is not None:
                trace.append((line, None))
        counts["kept"] = len(kept)
        if (
            o.min_num_sentences
            and len(kept) < o.min_num_sentences  # each kept line holds at least one sentence
        ):
            sentences = count_sentences(kept)
            if sentences < o.min_num_sentences:
                return C4Result(None, Rejection("c4_too_few_sentences", sentences,
                                                o.min_num_sentences, "<", "sentences"), counts)
        if not kept:
            return C4Result(None, "c4_empty", counts)
        return C4Result("\n".join(kept), None, counts)


@cache
def _default() -> C4Rules:
    return C4Rules()


def c4_clean(text: str) -> str | None:
    """Return ``text`` cleaned by the C4 rules with their default options, or None if dropped."""
    return _default().apply(text).text


def c4_quality(text: str) -> bool:
    """Return True when the C4 rules with their default options keep the document."""
    return _default().apply(text).reason is None
