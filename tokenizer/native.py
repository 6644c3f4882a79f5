"""The native GPT-2-pattern encoder (``tokenizer/_encode.c``), when it is built.

:func:`native_encoder` returns an encoder for a tokenizer whose pre-tokenization pattern is
GPT-2's, or ``None`` (other patterns, or the extension not compiled): callers then use
tiktoken. Its ids equal ``tokenizer.Tokenizer.encode`` for text without special tokens: the
scanner reproduces the GPT-2 regex with the letter/number/whitespace classes of the `regex`
module that ``Tokenizer`` uses, taken from that module here.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import regex

from tokenizer.patterns import GPT2_PATTERN

try:
    from tokenizer import _encode
except ImportError:  # built by setup.py when a C compiler is there
    _encode = None

N_CODEPOINTS = 0x110000
_OTHER, _LETTER, _NUMBER, _SPACE = 0, 1, 2, 3


@lru_cache(maxsize=1)
def code_point_classes() -> bytes:
    """One byte per code point: 1 for ``\\p{L}``, 2 for ``\\p{N}``, 3 for ``\\s``, else 0,
    as the `regex` module classifies them (surrogates are 0)."""
    table = bytearray(N_CODEPOINTS)
    below, above = range(0xD800), range(0xE000, N_CODEPOINTS)
    chars = "".join(map(chr, below)) + "".join(map(chr, above))
    gap = 0xE000 - 0xD800
    for cls, pattern in ((_LETTER, r"\p{L}+"), (_NUMBER, r"\p{N}+"), (_SPACE, r"\s+")):
        for m in regex.finditer(pattern, chars):
            start, end = m.span()  # string indices; code points skip the surrogates
            for lo, hi in ((start, min(end, 0xD800)), (max(start, 0xD800) + gap, end + gap)):
                if lo < hi:
                    table[lo:hi] = bytes([cls]) * (hi - lo)
    return bytes(table)


class NativeEncoder:
    """Ordinary-text encoder (no special tokens) over token bytes -> id ranks."""

    def __init__(self, ranks: dict[bytes, int]) -> None:
        if _encode is None:
            raise RuntimeError("the native encoder (tokenizer._encode) is not built")
        self._handle = _encode.new(list(ranks), list(ranks.values()), code_point_classes())

    def encode_numpy(self, text: str) -> np.ndarray:
        """Ids of ``text`` as uint32 (its special-token strings are encoded as text)."""
        return np.frombuffer(_encode.encode(self._handle, text), dtype=np.uint32)

    def encode(self, text: str) -> list[int]:
        """Ids of ``text`` as a list."""
        return self.encode_numpy(text).tolist()


def native_encoder(ranks: dict[bytes, int], pattern: str) -> NativeEncoder | None:
    """A :class:`NativeEncoder` for ``ranks`` if ``pattern`` is GPT-2's and the extension is
    built, else ``None``."""
    if _encode is None or pattern != GPT2_PATTERN:
        return None
    return NativeEncoder(ranks)
