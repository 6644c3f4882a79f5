"""Pre-tokenization regexes: GPT-2, GPT-4 (cl100k) and o200k, selectable by name."""

from __future__ import annotations

import functools

import regex

# GPT-2's own pattern (as in its encoder.py and Hugging Face's ByteLevel pre-tokenizer);
# tiktoken's possessive rewrite of it splits text identically.
GPT2_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
CL100K_PATTERN = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+"""
    r"""|\s++$|\s*[\r\n]|\s+(?!\S)|\s"""
)
O200K_PATTERN = "|".join(
    [
        r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
        r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
        r"""\p{N}{1,3}""",
        r""" ?[^\s\p{L}\p{N}]+[\r\n/]*""",
        r"""\s*[\r\n]+""",
        r"""\s+(?!\S)""",
        r"""\s+""",
    ]
)

NAMED_PATTERNS: dict[str, str] = {
    "gpt2": GPT2_PATTERN,
    "cl100k": CL100K_PATTERN,
    "gpt4": CL100K_PATTERN,
    "o200k": O200K_PATTERN,
}


def resolve_pattern(pattern: str) -> str:
    """Return the regex source for `pattern`: a known name (gpt2, cl100k/gpt4, o200k) or a regex.

    Raises `ValueError` when the string is neither a known name nor a valid regex.
    """
    if pattern in NAMED_PATTERNS:
        return NAMED_PATTERNS[pattern]
    try:
        regex.compile(pattern)
    except regex.error as exc:
        raise ValueError(f"not a pattern name or a valid regex: {pattern!r} ({exc})") from exc
    return pattern


@functools.lru_cache(maxsize=32)
def compile_pattern(pattern: str) -> regex.Pattern:
    """Compile a pattern name or regex (cached); returns the compiled `regex` pattern."""
    return regex.compile(resolve_pattern(pattern))
