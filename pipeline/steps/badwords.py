"""``badwords_v1``: C4's bad-words rule with the LDNOOBW list of each document's language.

The count of list entries in the text (word-boundary matching; substrings for Japanese,
Thai and Chinese, as C4 does; see :mod:`pipeline.text.badwords`) is written as
``badwords_count``; a document is dropped when it exceeds ``max_matches`` (0, C4's rule:
any match drops). ``max_matches: null`` only annotates. The list is chosen by the
``language`` metadata that ``langid_v1``/``langid_v2`` write; a document without it uses
``default_language``. A language without a list is kept, counted in ``no_list:<code>``,
with ``badwords_count`` null.
"""

from __future__ import annotations

import os
from typing import ClassVar

import pyarrow as pa
from pydantic import Field

from pipeline.core.document import Document
from pipeline.core.step import Filter, Rejection, StepCheckError, StepOptions
from pipeline.text.badwords import (
    C4_ALLOWLIST,
    C4_SUBSTRING_LANGUAGES,
    BadWords,
    list_languages,
    read_word_list,
    resolve_list,
)


class BadWordsOptions(StepOptions):
    """Options of ``badwords_v1``."""

    lists: str = Field("../shared/data/lists/ldnoobw",
                       description="folder of LDNOOBW lists, one CODE.json array per language")
    max_matches: int | None = Field(
        0, ge=0, description="drop when badwords_count exceeds this; null: annotate only")
    language_field: str = Field("language", description="metadata key of the language code")
    default_language: str | None = Field(
        "en", description="list for documents without a language; null: leave them unchecked")
    substring_languages: list[str] = Field(
        list(C4_SUBSTRING_LANGUAGES),
        description="languages written without spaces: entries match anywhere (C4: ja, th, zh)")
    allowlist: dict[str, list[str]] = Field(
        {k: list(v) for k, v in C4_ALLOWLIST.items()},
        description="entries removed from a language's list (C4's common subwords)")
    aliases: dict[str, str] = Field(
        {"tl": "fil", "nb": "no"},
        description="language code -> list code, for codes language ID reports differently")


class BadWordsFilter(Filter):
    """Writes ``badwords_count``; drops documents over ``max_matches`` (reason ``badwords``).

    Counters: ``matched:<list>`` (documents with at least one match, per list),
    ``no_list:<code>`` (documents whose language has no list), ``no_language``
    (documents without a language: checked with ``default_language``'s list if set).
    """

    name = "badwords_v1"
    Options = BadWordsOptions
    options: BadWordsOptions
    metadata_fields: ClassVar[dict[str, pa.DataType]] = {"badwords_count": pa.int32()}
    transient_attrs = ("_lists",)  # Aho-Corasick automata, rebuilt in each worker

    def __init__(self, options: BadWordsOptions | None = None) -> None:
        super().__init__(options)
        self._lists: BadWords | None = None

    def check(self) -> None:
        """Check that ``lists`` is a folder of valid JSON lists, with one for the default."""
        o = self.options
        found = list_languages(o.lists)
        if not found:
            what = "has no CODE.json lists" if os.path.isdir(o.lists) else "does not exist"
            raise StepCheckError("lists", f"folder {o.lists!r} {what}; point lists at the "
                                 "LDNOOBW folder (../shared/data/lists/ldnoobw)")
        for path in found.values():
            try:
                read_word_list(path)
            except ValueError as e:
                raise StepCheckError("lists", str(e)) from None
        if (o.default_language is not None
                and resolve_list(o.default_language, found, o.aliases) is None):
            raise StepCheckError(
                "default_language", f"{o.default_language!r} has no list in {o.lists!r} "
                f"(lists: {', '.join(sorted(found))}); choose one of them or null")

    def setup(self) -> None:
        """Build one matcher per language list (once per worker)."""
        if self._lists is None:
            o = self.options
            self._lists = BadWords(o.lists, o.substring_languages, o.allowlist, o.aliases)

    def reject_reason(self, doc: Document) -> Rejection | None:
        """Annotate ``badwords_count``; return ``badwords`` when it exceeds ``max_matches``."""
        self.setup()
        assert self._lists is not None
        language = doc.metadata.get(self.options.language_field)
        if not language:
            language = self.options.default_language
            self.count("no_language")
        count = None if language is None else self._lists.count(doc.text, str(language))
        doc.metadata["badwords_count"] = count
        if count is None:
            if language is not None:
                self.count(f"no_list:{language}")
            return None
        code = self._lists.list_for(str(language))
        if count:
            self.count(f"matched:{code}")
        limit = self.options.max_matches
        if limit is not None and count > limit:
            return Rejection("badwords", count, limit, ">", f"bad words ({code} list)",
                             "badwords_count")
        return None
