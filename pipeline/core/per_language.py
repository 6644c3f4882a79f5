"""Per-language option overrides for a step (FineWeb-2 style thresholds per language).

A step whose options derive from :class:`PerLanguageOptions` accepts, besides its usual
options, ``per_language: {de: {threshold: 0.7}, ...}``: for a document whose ``language``
metadata (written by ``langid_*``) is a listed code, the step applies its options with that
language's overrides; any other document (or one without ``language``) gets the base
options. The override keys are the step's own option names (a class may narrow them with
``per_language_keys``) and are validated with the step's own rules when the job is
validated: an unknown key or a wrong value is refused in one line naming the language and
the key.

A step builds what it needs per language once, at construction, with :class:`ByLanguage`
(``ByLanguage(options, GopherQuality)``) and picks per document with
:meth:`ByLanguage.pick`; without ``per_language`` it holds only the base object, so jobs
that do not use overrides decide exactly as before.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar, Generic, Self, TypeVar

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_core import PydanticCustomError

from pipeline.core.document import Document
from pipeline.core.step import StepOptions

#: the metadata key holding a document's language code (written by ``langid_v1``/``v2``)
LANGUAGE_KEY = "language"

T = TypeVar("T")


class PerLanguageOptions(StepOptions):
    """Step options with ``per_language`` overrides; mix in before the step's options class.

    ``per_language_keys`` names the options a language may override (``None``: every
    option but ``per_language`` itself).
    """

    per_language_keys: ClassVar[frozenset[str] | None] = None

    per_language: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="language code -> options that replace the base ones for that language",
    )

    @field_validator("per_language")
    @classmethod
    def _normalise_codes(cls, value: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for code, override in value.items():
            key = str(code).strip().lower()
            if not key:
                raise ValueError("a language code is empty")
            if key in out:
                raise ValueError(f"language {key!r} is listed twice")
            out[key] = override or {}
        return out

    @classmethod
    def overridable(cls) -> frozenset[str]:
        """Return the option names a language may override."""
        if cls.per_language_keys is not None:
            return cls.per_language_keys
        return frozenset(cls.model_fields) - {"per_language"}

    @model_validator(mode="after")
    def _check_overrides(self) -> Self:
        # Builds every language's options once here, so a bad override is refused when the
        # job is validated (the step builds them again, identically, at construction).
        self.for_languages()
        return self

    def for_languages(self) -> dict[str, Self]:
        """Return ``{code: these options with that language's overrides}``, each validated.

        Each is a copy of these options with only the overridden keys replaced (coerced by
        the options' own validation; an override replaces the option's whole value, so
        ``top_n_grams: {2: 0.3}`` leaves no 3- or 4-gram rule) and ``per_language`` empty. Raises a pydantic custom
        error (``per_language.<code>: ...``) on an unknown key or an invalid value.
        """
        allowed = self.overridable()
        base = self.model_dump(exclude={"per_language"})
        resolved: dict[str, Self] = {}
        for code, override in self.per_language.items():
            unknown = sorted(set(override) - allowed)
            if unknown:
                raise PydanticCustomError(
                    "per_language_key",
                    "per_language.{code}: unknown key(s) {unknown}; a language may override "
                    "{allowed}",
                    {"code": code, "unknown": ", ".join(map(repr, unknown)),
                     "allowed": ", ".join(sorted(allowed))},
                )
            try:
                checked = type(self).model_validate({**base, **override})
            except ValidationError as e:
                problems = "; ".join(
                    f"per_language.{code}.{'.'.join(map(str, err['loc']))}: {err['msg']}"
                    for err in e.errors())
                raise PydanticCustomError("per_language_value", problems) from None
            update = {k: getattr(checked, k) for k in override}
            resolved[code] = self.model_copy(update={**update, "per_language": {}})
        return resolved


class ByLanguage(Generic[T]):
    """One object (rules, thresholds) per language with overrides, plus the base one.

    ``build`` is called once with the base options and once per language of
    ``options.per_language``; it is not kept, so the instance pickles when its objects do.
    Options without ``per_language`` (a plain options class) give only the base object.
    """

    def __init__(self, options: StepOptions, build: Callable[[Any], T]) -> None:
        self.base: T = build(options)
        overrides = options.for_languages() if isinstance(options, PerLanguageOptions) else {}
        self.languages: dict[str, T] = {code: build(o) for code, o in overrides.items()}

    def get(self, language: str | None) -> T:
        """Return the object for ``language`` (a code, or None), else the base one."""
        if language is None or not self.languages:
            return self.base
        return self.languages.get(language, self.base)

    def pick(self, doc: Document) -> T:
        """Return the object for ``doc``'s ``language`` metadata, else the base one."""
        if not self.languages:
            return self.base
        return self.languages.get(doc.metadata.get(LANGUAGE_KEY), self.base)
