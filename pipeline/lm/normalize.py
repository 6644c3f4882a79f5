"""CCNet's text normalisation, applied identically when a model is trained and when it scores.

CCNet (Wenzek et al., 2019, ``cc_net/text_normalizer.py``) normalises each line before its
KenLM models see it: strip, lower case, strip accents (NFD, then drop combining marks),
every Unicode digit to ``0``, a fixed table of Unicode punctuation to ASCII, and control
characters removed. :class:`NormalizeOptions` records which of these a model used; it is
stored in each model's sidecar so a step can refuse a model normalised differently.
"""

from __future__ import annotations

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
_PUNCT_TABLE = str.maketrans(_UNICODE_PUNCT)
_PUNCT_DELETE = str.maketrans(dict.fromkeys(_UNICODE_PUNCT, ""))
# C0 and C1 control characters (CCNet's NON_PRINTING_CHARS_RE), tab and newline included.
_NON_PRINTING = str.maketrans(dict.fromkeys([*range(0, 32), *range(127, 160)], None))
_DIGIT_RE = regex.compile(r"\d")
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


def normalize_line(line: str, opts: NormalizeOptions | None = None) -> str:
    """Return one line normalised as CCNet's ``normalize`` does (stripped; may be empty)."""
    o = opts or _DEFAULT
    line = line.strip()
    if not line:
        return line
    if o.lower:
        line = line.lower()
    if o.strip_accents:
        line = strip_accents(line)
    if o.digits_to_zero:
        line = _DIGIT_RE.sub("0", line)
    if o.punct == "replace":
        line = line.translate(_PUNCT_TABLE)
    elif o.punct == "remove":
        line = line.translate(_PUNCT_DELETE)
    return line.translate(_NON_PRINTING)


def normalized_lines(text: str, opts: NormalizeOptions | None = None) -> list[str]:
    """Split ``text`` into lines (paragraphs), normalise each; return the non-empty ones.

    Each returned line has its tokens separated by single spaces, the form KenLM scores.
    """
    out = []
    for raw in text.splitlines():
        toks = normalize_line(raw, opts).split()
        if toks:
            out.append(" ".join(toks))
    return out


_DEFAULT = NormalizeOptions()
