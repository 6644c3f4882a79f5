"""Splitting text around special tokens (escaped, longest first, so overlaps pick the longest)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import regex


def special_pattern(special_tokens: Sequence[str]) -> regex.Pattern | None:
    """Compile an alternation matching any special token, longest first; None when there are none."""
    unique = sorted(set(special_tokens), key=lambda s: (-len(s), s))
    unique = [s for s in unique if s]
    if not unique:
        return None
    return regex.compile("|".join(regex.escape(s) for s in unique))


def split_specials(
    text: str, pattern: regex.Pattern | None
) -> Iterator[tuple[str, bool]]:
    """Yield `(piece, is_special)` for the text between and including special tokens, in order.

    Empty text pieces are skipped. With `pattern` None the whole text is one ordinary piece.
    """
    if pattern is None:
        if text:
            yield text, False
        return
    pos = 0
    for match in pattern.finditer(text):
        start, end = match.span()
        if start > pos:
            yield text[pos:start], False
        yield match.group(), True
        pos = end
    if pos < len(text):
        yield text[pos:], False


def partial_special_suffix(text: str, special_tokens: Sequence[str]) -> int:
    """Return the start of the longest suffix of `text` that is a proper prefix of a special token.

    Returns `len(text)` when no suffix could grow into a special token. Used when encoding a
    stream in pieces, so a token split across two pieces is still recognised.
    """
    best = len(text)
    for token in special_tokens:
        for k in range(min(len(token) - 1, len(text)), 0, -1):
            if text.endswith(token[:k]):
                best = min(best, len(text) - k)
                break
    return best
