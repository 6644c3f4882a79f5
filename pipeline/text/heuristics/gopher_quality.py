"""Gopher quality rules (Rae et al. 2021, *Scaling Language Models*, appendix A.1.1).

A document is removed when it

* has fewer than 50 or more than 100,000 words,
* has a mean word length outside 3 to 10 characters,
* has more than 0.1 ``#`` symbols, or more than 0.1 ellipses (``...`` / ``…``), per word,
* has more than 90% of its lines starting with a bullet, or more than 30% ending in an
  ellipsis,
* has fewer than 80% of its words containing an alphabetic character,
* contains fewer than 2 of the stop words *the, be, to, of, and, that, have, with*.

Definitions (chosen for speed; every count is one C-level pass over the text):

* a *token* is a whitespace-separated string (``str.split``);
* a *word* is a token with its leading and trailing punctuation stripped; tokens made only
  of punctuation or symbols (``-``, ``|``, ``…``) are not words. Word count, mean word
  length and the symbol ratios use words;
* the alphabetic-word ratio is over all tokens, so symbol-only tokens count against it;
* a *line* is a non-blank ``\\n``-separated line; bullets are ``• ● ◦ ▪ ‣ ⁃ ∙ * - –``
  after leading spaces;
* stop words are matched case-insensitively as whole words and counted with repetition
  (as datatrove and dolma count them).

Boundaries follow the paper's wording: a document *at* a threshold is kept (50 words
passes, 30% ellipsis lines passes, 80% alphabetic words passes).
"""

from __future__ import annotations

import re
from functools import cache

from pydantic import Field

from pipeline.core.step import Rejection, StepOptions

#: The eight English stop words of the paper.
STOP_WORDS: tuple[str, ...] = ("the", "be", "to", "of", "and", "that", "have", "with")

#: A whitespace token stripped of edge punctuation; symbol-only tokens do not match.
_WORD_RE = re.compile(r"[^\W_](?:\S*[^\W_])?")
#: One match per whitespace token that holds a letter (``[^\W\d_]``): its first letter
#: and the rest of the token.
_ALPHA_TOKEN_RE = re.compile(r"[^\W\d_]\S*")
_NONBLANK_LINE_RE = re.compile(r"^[^\S\n]*\S", re.MULTILINE)
_BULLET_LINE_RE = re.compile(r"^[^\S\n]*[•●◦▪‣⁃∙*\-–]", re.MULTILINE)
_ELLIPSIS_LINE_RE = re.compile(r"(?:\.\.\.|…)[^\S\n]*$", re.MULTILINE)


@cache
def _stop_word_re(words: tuple[str, ...]) -> re.Pattern[str]:
    """Return a case-insensitive whole-word pattern matching any of ``words``."""
    alternatives = "|".join(re.escape(w) for w in sorted(words, key=len, reverse=True))
    return re.compile(rf"(?<!\w)(?:{alternatives})(?!\w)", re.IGNORECASE)


class GopherQualityOptions(StepOptions):
    """Thresholds of the Gopher quality rules; ``None`` switches a rule off."""

    min_words: int | None = Field(50, ge=0, description="fewer words: gopher_short_doc")
    max_words: int | None = Field(100_000, ge=0, description="more words: gopher_long_doc")
    min_avg_word_length: float | None = Field(3, ge=0, description="characters per word")
    max_avg_word_length: float | None = Field(10, ge=0, description="characters per word")
    max_symbol_word_ratio: float | None = Field(
        0.1, ge=0, description="'#' per word, and ellipses per word (each separately)"
    )
    max_bullet_lines_ratio: float | None = Field(0.9, ge=0, le=1)
    max_ellipsis_lines_ratio: float | None = Field(0.3, ge=0, le=1)
    min_alpha_words_ratio: float | None = Field(
        0.8, ge=0, le=1, description="share of tokens with an alphabetic character"
    )
    min_stop_words: int | None = Field(2, ge=0, description="stop-word occurrences needed")
    stop_words: list[str] = Field(default_factory=lambda: list(STOP_WORDS), min_length=1)


class GopherQuality:
    """The Gopher quality rules with fixed thresholds; :meth:`reject_reason` applies them."""

    def __init__(self, options: GopherQualityOptions | None = None) -> None:
        self.options = options if options is not None else GopherQualityOptions()
        self._stop_re = _stop_word_re(tuple(w.lower() for w in self.options.stop_words))

    def reject_reason(self, text: str) -> Rejection | None:
        """Return ``None`` when ``text`` passes every rule, else the first failing rule's reason.

        The reason is a :class:`~pipeline.core.step.Rejection` carrying the measured value
        and the threshold it failed (``alphabetic words 0.62 < 0.8``).

        Reasons, in the order checked: ``gopher_short_doc``, ``gopher_long_doc``,
        ``gopher_below_avg_word_len``, ``gopher_above_avg_word_len``,
        ``gopher_too_many_hashes``, ``gopher_too_many_ellipsis``,
        ``gopher_too_many_bullets``, ``gopher_too_many_end_ellipsis``,
        ``gopher_below_alpha_threshold``, ``gopher_too_few_stop_words``.
        """
        o = self.options
        words = _WORD_RE.findall(text)
        n_words = len(words)
        if n_words == 0 or (o.min_words is not None and n_words < o.min_words):
            return Rejection("gopher_short_doc", n_words, o.min_words, "<", "words")
        if o.max_words is not None and n_words > o.max_words:
            return Rejection("gopher_long_doc", n_words, o.max_words, ">", "words")

        mean_len = sum(map(len, words)) / n_words
        if o.min_avg_word_length is not None and mean_len < o.min_avg_word_length:
            return Rejection("gopher_below_avg_word_len", round(mean_len, 3),
                             o.min_avg_word_length, "<", "mean word length")
        if o.max_avg_word_length is not None and mean_len > o.max_avg_word_length:
            return Rejection("gopher_above_avg_word_len", round(mean_len, 3),
                             o.max_avg_word_length, ">", "mean word length")

        if o.max_symbol_word_ratio is not None:
            ratio = text.count("#") / n_words
            if ratio > o.max_symbol_word_ratio:
                return Rejection("gopher_too_many_hashes", round(ratio, 4),
                                 o.max_symbol_word_ratio, ">", "'#' per word")
            ratio = (text.count("...") + text.count("…")) / n_words
            if ratio > o.max_symbol_word_ratio:
                return Rejection("gopher_too_many_ellipsis", round(ratio, 4),
                                 o.max_symbol_word_ratio, ">", "ellipses per word")

        if o.max_bullet_lines_ratio is not None or o.max_ellipsis_lines_ratio is not None:
            n_lines = len(_NONBLANK_LINE_RE.findall(text))
            if o.max_bullet_lines_ratio is not None:
                ratio = len(_BULLET_LINE_RE.findall(text)) / n_lines
                if ratio > o.max_bullet_lines_ratio:
                    return Rejection("gopher_too_many_bullets", round(ratio, 4),
                                     o.max_bullet_lines_ratio, ">", "bullet lines")
            if o.max_ellipsis_lines_ratio is not None:
                ratio = len(_ELLIPSIS_LINE_RE.findall(text)) / n_lines
                if ratio > o.max_ellipsis_lines_ratio:
                    return Rejection("gopher_too_many_end_ellipsis", round(ratio, 4),
                                     o.max_ellipsis_lines_ratio, ">", "lines ending in an ellipsis")

        if o.min_alpha_words_ratio is not None:
            n_tokens = len(text.split())
            ratio = len(_ALPHA_TOKEN_RE.findall(text)) / n_tokens
            if ratio < o.min_alpha_words_ratio:
                return Rejection("gopher_below_alpha_threshold", round(ratio, 4),
                                 o.min_alpha_words_ratio, "<", "alphabetic words")

        if o.min_stop_words:
            found = 0
            for _ in self._stop_re.finditer(text):
                found += 1
                if found >= o.min_stop_words:
                    break
            else:
                return Rejection("gopher_too_few_stop_words", found, o.min_stop_words, "<",
                                 "stop words")
        return None


@cache
def _default() -> GopherQuality:
    return GopherQuality()


def gopher_quality_reason(text: str) -> str | None:
    """Return why ``text`` fails the Gopher quality rules at the paper's thresholds, or None."""
    return _default().reject_reason(text)


def gopher_quality(text: str) -> bool:
    """Return True when ``text`` passes every Gopher quality rule at the paper's thresholds."""
    return _default().reject_reason(text) is None
