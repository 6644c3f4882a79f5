"""``extract_v1``: replace HTML with its main text (boilerplate removed)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Literal

from pydantic import Field

from pipeline.core.document import Document
from pipeline.core.step import Step, StepContext, StepOptions

if TYPE_CHECKING:
    from pipeline.text.extract import ExtractionSandbox

# Kept in sync with pipeline.text.extract (not imported here so discovery stays cheap; the
# extractor libraries themselves are only imported in the worker on first use anyway).
_HTML_TYPES = frozenset({"text/html", "application/xhtml+xml", "application/xhtml", "text/xhtml"})


def media_base(media_type: str) -> str:
    """``"Text/HTML; charset=utf-8"`` -> ``"text/html"``."""
    return media_type.split(";", 1)[0].strip().lower()


class ExtractOptions(StepOptions):
    """Options of :class:`Extract`."""

    #: resiliparse is the default: same main-content recall as trafilatura at about ten
    #: times the speed, but less boilerplate removed (benchmarks/RESULTS.md, Extraction)
    extractor: Literal["resiliparse", "trafilatura"] = "resiliparse"
    #: HTML beyond this many UTF-8 bytes is cut off before extraction
    max_html_bytes: int = Field(default=2_000_000, gt=0)
    #: per-document limit; the extractor runs in a child process that is killed on expiry.
    #: ``None`` runs in-process with no limit (slightly faster, no protection).
    timeout_seconds: float | None = Field(default=10.0, gt=0)


class Extract(Step):
    """HTML documents get their main text as ``text`` and ``media_type`` ``text/plain``.

    * ``text/html`` / XHTML: extracted; nothing left -> dropped ``no_text``; over the
      deadline -> dropped ``timeout``; extractor crashed -> dropped ``extract_error``.
      HTML over ``max_html_bytes`` is truncated first (counter ``truncated_html``).
    * other ``text/*`` (or no media type): passed through unchanged.
    * anything else (PDF, images, ...): dropped ``unsupported_media_type``, since its
      text field cannot be trusted to be prose.
    """

    name = "extract_v1"
    Options = ExtractOptions
    options: ExtractOptions
    transient_attrs = ("_sandbox",)  # a running child process does not travel

    def __init__(self, options: ExtractOptions | None = None) -> None:
        super().__init__(options)
        self._sandbox: ExtractionSandbox | None = None

    def setup(self) -> None:
        """Start (or reuse) this process's extractor child, or import the extractor in-process.

        The child is shared by every ``extract_v1`` with the same extractor and timeout in
        this worker process (see :func:`pipeline.text.extract.shared_sandbox`).
        """
        from pipeline.text.extract import html_to_text, shared_sandbox

        if self.options.timeout_seconds is None:
            html_to_text("<p>warm-up</p>", self.options.extractor)
        else:
            self._sandbox = shared_sandbox(self.options.extractor, self.options.timeout_seconds)

    def _extract(self, html: str) -> str | None:
        from pipeline.text.extract import ExtractionError, html_to_text

        if self.options.timeout_seconds is None:
            try:
                return html_to_text(html, self.options.extractor)
            except Exception as exc:  # one bad page must not end the job (as in the sandbox)
                raise ExtractionError(f"{type(exc).__name__}: {exc}") from exc
        if self._sandbox is None:
            self.setup()
        assert self._sandbox is not None
        return self._sandbox.extract(html)

    def run(self, docs: Iterable[Document], ctx: StepContext) -> Iterator[Document]:
        """Yield text documents and extracted HTML documents; drop the rest with a reason."""
        from pipeline.text.extract import ExtractionError, ExtractionTimeout, truncate_utf8

        for doc in docs:
            base = media_base(doc.media_type)
            if base not in _HTML_TYPES:
                if base == "" or base.startswith("text/"):
                    yield doc
                else:
                    ctx.drop(doc, self.name, "unsupported_media_type")
                continue
            html, truncated = truncate_utf8(doc.text, self.options.max_html_bytes)
            if truncated:
                ctx.stats.counters["truncated_html"] += 1
            try:
                text = self._extract(html)
            except ExtractionTimeout:
                ctx.drop(doc, self.name, "timeout")
                continue
            except ExtractionError:
                ctx.drop(doc, self.name, "extract_error")
                continue
            if text is None:
                ctx.drop(doc, self.name, "no_text")
                continue
            doc.text = text
            doc.media_type = "text/plain"
            yield doc
