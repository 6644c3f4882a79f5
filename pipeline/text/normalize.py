"""CCNet's text normalisation, applied identically when a model is trained and when it scores.

CCNet (Wenzek et al., 2019, ``cc_net/text_normalizer.py``) normalises each line before its
KenLM models see it: strip, lower case, strip accents (NFD, then drop combining marks),
every Unicode digit to ``0``, a fixed table of Unicode punctuation to ASCII, and control
characters removed. :class:`NormalizeOptions` records which of these a model used; it is
stored in each model's sidecar so a step can refuse a model normalised differently.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Literal

import regex
from pydantic import BaseModel, ConfigDict

# CCNet's punctuation table (replace_unicode_punct), as a str.translate table.
_UNICODE_PUNCT = {
    "，": ",", "。": ".", "、": ",", "„": '"', "”": '"', "“": '"', "«": '"', "»": '"',
    "１": '"', "」": '"', "「": '"', "《": '"', "》": '"', "´": "'", "∶": ":", "：": ":",
    "？": "?", "！": "!", "（": "(", "）": ")", "；": ";", "–": "-", "—": " - ", "．": ". ",
    "～": "~", "’": "'", "…": "...", "━": "-", "〈": "<", "〉": ">", "【": "[", "】": "]",
    "％": "%", "►": "-",
}  # fmt: skip
# regex substitution rather than str.translate: translate with a dict costs a Python-level
# lookup per character of non-ASCII text, the regex scans in C and calls back per match
_PUNCT_RE = re.compile("[" + "".join(re.escape(c) for c in _UNICODE_PUNCT) + "]")
# C0 and C1 control characters (CCNet's NON_PRINTING_CHARS_RE), tab and newline included.
_NON_PRINTING_RE = re.compile("[\x00-\x1f\x7f-\x9f]")
_DIGIT_RE = re.compile(r"\d")  # Unicode decimal digits, as CCNet's re.compile(r"\d")
_MARK_RE = regex.compile(r"\p{Mn}+")


class NormalizeOptions(BaseModel):
    """Which of CCNet's normalisations to apply (defaults: all of them, CCNet's ``punct=1``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    lower: bool = True
    strip_accents: bool = True
    digits_to_zero: bool = True
    punct: Literal["replace", "remove", "keep"] = "replace"


def strip_accents(text: str) -> str:
    """Return ``text`` in NFD form without its non-spacing combining marks (category Mn)."""
    if text.isascii():
        return text
    return _MARK_RE.sub("", unicodedata.normalize("NFD", text))


def _normalize_chars(text: str, o: NormalizeOptions) -> str:
    """Apply the per-character steps (case, accents, digits, punctuation) to ``text``.

    None of them adds or removes line breaks, so they can run on a whole document before
    it is split into lines. Translations are skipped where they cannot change anything
    (the punctuation table has no ASCII keys).
    """
    if o.lower:
        text = text.lower()
    if o.strip_accents:
        text = strip_accents(text)
    if o.digits_to_zero:
        text = _DIGIT_RE.sub("0", text)
    if o.punct != "keep" and not text.isascii():
        if o.punct == "replace":
            text = _PUNCT_RE.sub(lambda m: _UNICODE_PUNCT[m.group()], text)
        else:
            text = _PUNCT_RE.sub("", text)
    return text


def _strip_non_printing(line: str) -> str:
    return line if line.isprintable() else _NON_PRINTING_RE.sub("", line)


def normalize_line(line: str, opts: NormalizeOptions | None = None) -> str:
    """Return one line normalised as CCNet's ``normalize`` does (stripped; may be empty)."""
    line = line.strip()
    if not line:
        return line
    return _strip_non_printing(_normalize_chars(line, opts or _DEFAULT))


def normalized_lines(text: str, opts: NormalizeOptions | None = None) -> list[str]:
    """Split ``text`` into lines (paragraphs), normalise each; return the non-empty ones.

    Each returned line has its tokens separated by single spaces, the form KenLM scores.
    The result equals applying :func:`normalize_line` to every line, done once per text.
    """
    out = []
    for raw in _normalize_chars(text, opts or _DEFAULT).splitlines():
        toks = _strip_non_printing(raw).split()
        if toks:
            out.append(" ".join(toks))
    return out


_DEFAULT = NormalizeOptions()
