"""Bad-word matching as C4 does it, with one Aho-Corasick automaton per language.

C4 (and datatrove's ``C4BadWordsFilter``) drops a page whose lowercased text contains an
entry of the LDNOOBW list for the page's language. An entry matches where it is flanked by
non-word characters or the text's ends (C4's ``(?:\\W|^)(w1|w2|...)(?:\\W|$)``; ``\\w`` as
Python's Unicode regex has it: ``str.isalnum()`` or ``_``), so ``Scunthorpe`` does not
match ``cunt``. For Japanese, Thai and Chinese, written without spaces between words, C4
matches entries anywhere (substrings) and allows the few entries that are common
subwords there (:data:`C4_ALLOWLIST`; without it the Chinese UDHR has 8 matches, all
``性`` of ``性别`` "sex"). Korean is written with spaces between words, so C4 (and this
module, by default) keeps word boundaries for it: a particle attached to a listed noun
(``개새끼가``) escapes the match, but as substrings several Korean entries are syllable
pairs inside ordinary words (``망가``, manga, in ``망가졌다`` "broke"; ``유모``, nanny, in
``유모차`` "pram"). ``substring_languages`` of :class:`BadWords` changes the choice.

List entries are lowercased too. C4's code (and datatrove's) lowercases only the text, so
capitalised entries never match: 61 of the 68 Spanish entries (``Sexo``, ``Puta``...), and
a few of other lists (``MILF`` in German).

The count of a text is the largest number of non-overlapping matched occurrences (every
entry occurrence that passes the boundary test, overlapping ones collapsed greedily by end
position, which maximises the count). C4's rule is "count > 0".

The automaton (pyahocorasick) finds every occurrence of every entry in one pass; the
boundary test runs only on those hits. On webmix text this is about 6.5x datatrove's C4
regex alternation per core, with the same decisions except for the capitalised entries
(``benchmarks/toolbox_filters_bench.py``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Collection, Iterable, Iterator
from pathlib import Path

import ahocorasick

#: languages written without spaces between words: entries match as substrings (C4)
C4_SUBSTRING_LANGUAGES = ("ja", "th", "zh")
#: entries C4 allows because they are common subwords in these languages (each flagged
#: over 10% of the language's pages when disallowed, per C4's source)
C4_ALLOWLIST: dict[str, tuple[str, ...]] = {"ja": ("sm", "グロ", "女の子"), "zh": ("性",)}


def read_word_list(path: str | os.PathLike) -> list[str]:
    """Return the entries of one LDNOOBW JSON list (a JSON array of strings), as written.

    Raises ``ValueError`` naming the file when it is not such an array.
    """
    try:
        with open(path, encoding="utf-8") as f:
            words = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: not a JSON word list ({e}); each list is one JSON array "
                         "of strings, as in ../shared/data/lists/ldnoobw") from None
    if not isinstance(words, list) or not all(isinstance(w, str) for w in words):
        raise ValueError(f"{path}: not a JSON array of strings; each list is one JSON array "
                         "of strings, as in ../shared/data/lists/ldnoobw")
    return words


def list_languages(folder: str | os.PathLike) -> dict[str, Path]:
    """Return ``{language code: list path}`` for the ``CODE.json`` files of ``folder``."""
    return {p.stem: p for p in sorted(Path(folder).glob("*.json")) if p.is_file()}


def resolve_list(language: str, available: Collection[str],
                 aliases: dict[str, str]) -> str | None:
    """Return the list code among ``available`` for ``language``, or None.

    ``aliases`` maps a reported code to a list's code (``tl`` -> ``fil``); a code with a
    region or script (``pt-BR``, ``zh_Hans``) without a list of its own falls back to its
    first part.
    """
    code = aliases.get(language, language)
    if code in available:
        return code
    base = code.replace("_", "-").split("-")[0].lower()
    base = aliases.get(base, base)
    return base if base in available else None


def _is_word_char(ch: str) -> bool:
    return ch.isalnum() or ch == "_"


class WordMatcher:
    """Counts the occurrences of a fixed set of entries in lowercased text.

    ``entries`` are stripped and lowercased (empty ones ignored); ``boundaries`` requires
    each occurrence to be flanked by non-word characters or the text's ends.
    """

    def __init__(self, entries: Iterable[str], boundaries: bool = True) -> None:
        self.entries = sorted({e.strip().lower() for e in entries if e.strip()})
        self.boundaries = boundaries
        self._automaton = ahocorasick.Automaton()
        for entry in self.entries:
            self._automaton.add_word(entry, len(entry))
        if self.entries:
            self._automaton.make_automaton()

    def occurrences(self, text: str) -> Iterator[tuple[int, int]]:
        """Yield ``(start, end)`` (end exclusive) of each counted occurrence in ``text``.

        ``text`` is already lowercased. Occurrences come in order of their end; one that
        overlaps the previous counted occurrence is skipped.
        """
        if not self.entries:
            return
        last_end = -1  # end index (inclusive) of the last counted occurrence
        limit = len(text) - 1
        for end, length in self._automaton.iter(text):
            start = end - length + 1
            if start <= last_end:
                continue
            if self.boundaries and (
                    (start > 0 and _is_word_char(text[start - 1]))
                    or (end < limit and _is_word_char(text[end + 1]))):
                continue
            last_end = end
            yield start, end + 1

    def count(self, text: str) -> int:
        """Return the number of non-overlapping occurrences in ``text`` (already lowercased)."""
        return sum(1 for _ in self.occurrences(text))


class BadWords:
    """Per-language bad-word matchers built from a folder of LDNOOBW JSON lists.

    ``substring_languages`` match entries anywhere; every other language needs word
    boundaries. ``allowlist`` maps a language to entries removed from its list.
    ``aliases`` and region fallback as in :func:`resolve_list`.
    """

    def __init__(self, folder: str | os.PathLike,
                 substring_languages: Iterable[str] = C4_SUBSTRING_LANGUAGES,
                 allowlist: dict[str, tuple[str, ...] | list[str]] | None = None,
                 aliases: dict[str, str] | None = None) -> None:
        allow = C4_ALLOWLIST if allowlist is None else allowlist
        substring = set(substring_languages)
        self.aliases = dict(aliases or {})
        self.matchers: dict[str, WordMatcher] = {}
        for code, path in list_languages(folder).items():
            banned = {w.strip().lower() for w in allow.get(code, ())}
            words = [w for w in read_word_list(path) if w.strip().lower() not in banned]
            self.matchers[code] = WordMatcher(words, boundaries=code not in substring)

    def list_for(self, language: str) -> str | None:
        """Return the code of the list that applies to ``language``, or None if none does."""
        return resolve_list(language, self.matchers, self.aliases)

    def count(self, text: str, language: str) -> int | None:
        """Return the matches of ``language``'s list in ``text``, or None without a list."""
        code = self.list_for(language)
        if code is None:
            return None
        return self.matchers[code].count(text.lower())
