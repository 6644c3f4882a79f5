"""``gopher_repetition_v1``: the Gopher repetition rules (:mod:`pipeline.text.heuristics.gopher_repetition`)."""

from __future__ import annotations

from typing import ClassVar

from pipeline.core.document import Document
from pipeline.core.per_language import ByLanguage, PerLanguageOptions
from pipeline.core.step import Filter, StepOptions
from pipeline.text.heuristics.gopher_repetition import GopherRepetition, GopherRepetitionOptions


class GopherRepetitionStepOptions(PerLanguageOptions, GopherRepetitionOptions):
    """The rules' options plus ``per_language`` overrides of any of them
    (:mod:`pipeline.core.per_language`)."""


class GopherRepetitionFilter(Filter):
    """Drops documents with too much repeated text; reasons are ``gopher_dup_*`` / ``gopher_top_*``."""

    name = "gopher_repetition_v1"
    Options: ClassVar[type[StepOptions]] = GopherRepetitionStepOptions

    def __init__(self, options: GopherRepetitionOptions | None = None) -> None:
        super().__init__(options)
        #: the rules per document language (``per_language``); ``rules`` applies the base options
        self.by_language = ByLanguage(self.options, GopherRepetition)
        self.rules = self.by_language.base

    def reject_reason(self, doc: Document) -> str | None:
        """Return the first failing rule's reason, or None to keep ``doc``."""
        return self.by_language.pick(doc).reject_reason(doc.text)
