"""``gopher_quality_v1``: the Gopher quality rules (see :mod:`pipeline.text.heuristics.gopher_quality`)."""

from __future__ import annotations

from typing import ClassVar

from pipeline.core.document import Document
from pipeline.core.per_language import ByLanguage, PerLanguageOptions
from pipeline.core.step import Filter, StepOptions
from pipeline.text.heuristics.gopher_quality import GopherQuality, GopherQualityOptions


class GopherQualityStepOptions(PerLanguageOptions, GopherQualityOptions):
    """The rules' options plus ``per_language`` overrides of any of them
    (:mod:`pipeline.core.per_language`)."""


class GopherQualityFilter(Filter):
    """Drops documents failing a Gopher quality rule; reasons are ``gopher_*``."""

    name = "gopher_quality_v1"
    Options: ClassVar[type[StepOptions]] = GopherQualityStepOptions

    def __init__(self, options: GopherQualityOptions | None = None) -> None:
        super().__init__(options)
        #: the rules per document language (``per_language``); ``rules`` applies the base options
        self.by_language = ByLanguage(self.options, GopherQuality)
        self.rules = self.by_language.base

    def reject_reason(self, doc: Document) -> str | None:
        """Return the first failing rule's reason, or None to keep ``doc``."""
        return self.by_language.pick(doc).reject_reason(doc.text)
