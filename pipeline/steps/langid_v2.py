"""``langid_v2``: ``langid_v1`` identifying the language of the text without its symbol runs.

``langid_v1`` gives fastText the whole text. English articles with ASCII tables
(``+-----+``, ``| cell |``) then score under the 0.65 threshold: on webmix it drops 313 of
1,666 English Wikipedia articles (``langid_v2``: 46; benchmarks/RESULTS.md). ``langid_v2`` blanks runs of
symbols and the table characters ``| + = _`` before identifying
(:func:`pipeline.text.langid.blank_symbols`); the document's text is unchanged.
"""

from __future__ import annotations

from pipeline.steps.langid import LangId, LangIdOptions


class LangIdV2Options(LangIdOptions):
    """Options of ``langid_v2``: those of ``langid_v1`` with ``blank_symbols`` on."""

    blank_symbols: bool = True


class LangIdV2(LangId):
    """Language ID on the text with symbol runs blanked; keeps configured languages."""

    name = "langid_v2"
    Options = LangIdV2Options
