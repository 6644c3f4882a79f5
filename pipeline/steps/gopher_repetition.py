"""``gopher_repetition_v1``: the Gopher repetition rules (:mod:`pipeline.text.heuristics.gopher_repetition`)."""

from __future__ import annotations

from typing import ClassVar

from pipeline.core.document import Document
from pipeline.core.step import Filter, StepOptions
from pipeline.text.heuristics.gopher_repetition import GopherRepetition, GopherRepetitionOptions


class GopherRepetitionFilter(Filter):
    """Drops documents with too much repeated text; reasons are ``gopher_dup_*`` / ``gopher_top_*``."""

    name = "gopher_repetition_v1"
    Options: ClassVar[type[StepOptions]] = GopherRepetitionOptions

    def __init__(self, options: GopherRepetitionOptions | None = None) -> None:
        super().__init__(options)
        self.rules = GopherRepetition(self.options)  # type: ignore[arg-type]

    def reject_reason(self, doc: Document) -> str | None:
        """Return the first failing rule's reason, or None to keep ``doc``."""
        return self.rules.reject_reason(doc.text)
