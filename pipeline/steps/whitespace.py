"""``whitespace_v1``: collapse runs of spaces and tabs inside lines, as HTML rendering does.

Text extracted from HTML never holds runs of spaces (a browser and every extractor collapse
them), while plain-text sources keep them: ASCII-table padding, aligned columns, indented
lines. Running this step on such a source (an evaluation set, say) puts it in the form the
extracted training text has, so a loss measured on it compares content rather than layout.
Spaces, tabs, form feeds and vertical tabs collapse (a single tab becomes a space, as HTML
renders it); no-break spaces stay. Line breaks (``\n`` or ``\r\n``) are kept; spaces at
the ends of lines are removed.
"""

from __future__ import annotations

import re
from typing import ClassVar

from pydantic import Field

from pipeline.core.document import Document
from pipeline.core.step import Mapper, StepContext, StepOptions

_RUN = re.compile(r"[ \t\f\v]+")  # not U+00A0: HTML keeps &nbsp; as it is
_LINE_END = re.compile(r" *(\r?\n) *")


class WhitespaceOptions(StepOptions):
    """What to normalise."""

    strip_lines: bool = Field(True, description="remove spaces at the start and end of lines")


class WhitespaceNormalizer(Mapper):
    """Replaces every run of horizontal whitespace with one space (counter
    ``whitespace_docs_changed``)."""

    name = "whitespace_v1"
    Options: ClassVar[type[StepOptions]] = WhitespaceOptions

    def apply(self, doc: Document, ctx: StepContext) -> Document:
        """Collapse ``doc.text``'s whitespace runs in place; return the document."""
        text = _RUN.sub(" ", doc.text)
        if self.options.strip_lines:  # type: ignore[attr-defined]
            text = _LINE_END.sub(r"\1", text).strip(" ")
        if text != doc.text:
            ctx.stats.counters["whitespace_docs_changed"] += 1
            doc.text = text
        return doc
