"""``c4_v1``: the C4 line and document rules (see :mod:`pipeline.text.heuristics.c4`).

A filter that also rewrites the text of the documents it keeps to their surviving lines.
For those documents, line outcomes are added to the step's counters:
``c4_lines_kept``, ``c4_lines_removed`` (all removal rules together) and
``c4_lines_removed:<rule>`` (``no_terminal_punct``, ``too_few_words``, ``javascript``,
``policy``, ``too_long_word``); ``c4_docs_changed`` counts those whose text changed.
Dropped documents are counted by reason only, with their original text.
"""

from __future__ import annotations

from typing import ClassVar

from pipeline.core.document import Document
from pipeline.core.per_language import ByLanguage, PerLanguageOptions
from pipeline.core.step import Filter, StepOptions
from pipeline.text.heuristics.c4 import C4Options, C4Rules


class C4StepOptions(PerLanguageOptions, C4Options):
    """The rules' options plus ``per_language`` overrides of any of them
    (:mod:`pipeline.core.per_language`)."""


class C4Filter(Filter):
    """Removes C4-rejected lines and drops documents C4 rejects (reasons ``c4_*``)."""

    name = "c4_v1"
    Options: ClassVar[type[StepOptions]] = C4StepOptions

    def __init__(self, options: C4Options | None = None) -> None:
        super().__init__(options)
        #: the rules per document language (``per_language``); ``rules`` applies the base options
        self.by_language = ByLanguage(self.options, C4Rules)
        self.rules = self.by_language.base

    def reject_reason(self, doc: Document) -> str | None:
        """Return the reason C4 drops ``doc``, or None after rewriting its text to the kept lines.

        Counts the line outcomes of a kept document (see the module docstring).
        """
        rules = self.by_language.pick(doc)
        result = rules.apply(doc.text)
        if result.text is None:
            return result.reason
        removed = 0
        for key, n in result.lines.items():
            if key == "kept":
                self.count("c4_lines_kept", n)
            elif n:
                self.count(f"c4_lines_removed:{key}", n)
                removed += n
        self.count("c4_lines_removed", removed)
        if result.text != doc.text:
            if self.wants_sample(doc):
                self.record_sample(doc, line_trace(rules, doc.text))
            doc.text = result.text
            self.count("c4_docs_changed")
        return None


#: lines and characters per line a change sample keeps (the report shows the beginning)
SAMPLE_LINES, SAMPLE_LINE_CHARS = 80, 400


def line_trace(rules: C4Rules, text: str) -> dict:
    """Return a change sample of ``text``: ``{"lines": [[line, rule or None], ...]}`` with
    the rule that removed each line (the first :data:`SAMPLE_LINES`, each cut short)."""
    trace: list[tuple[str, str | None]] = []
    rules.apply(text, trace)
    return {"lines": [[line[:SAMPLE_LINE_CHARS], rule] for line, rule in trace[:SAMPLE_LINES]],
            "lines_total": len(trace)}
