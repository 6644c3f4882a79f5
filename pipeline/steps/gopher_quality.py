"""``gopher_quality_v1``: the Gopher quality rules (see :mod:`pipeline.text.heuristics.gopher_quality`)."""

from __future__ import annotations

from typing import ClassVar

from pipeline.core.document import Document
from pipeline.core.step import Filter, StepOptions
from pipeline.text.heuristics.gopher_quality import GopherQuality, GopherQualityOptions


class GopherQualityFilter(Filter):
    """Drops documents failing a Gopher quality rule; reasons are ``gopher_*``."""

    name = "gopher_quality_v1"
    Options: ClassVar[type[StepOptions]] = GopherQualityOptions

    def __init__(self, options: GopherQualityOptions | None = None) -> None:
        super().__init__(options)
        self.rules = GopherQuality(self.options)  # type: ignore[arg-type]

    def reject_reason(self, doc: Document) -> str | None:
        """Return the first failing rule's reason, or None to keep ``doc``."""
        return self.rules.reject_reason(doc.text)
