"""GPT-2's reversible mapping between bytes and printable unicode characters.

`vocab.json`, `merges.txt` and Hugging Face's byte-level `tokenizer.json` store tokens as
strings in which every byte is replaced by one printable character.
"""

from __future__ import annotations

import functools


@functools.cache
def bytes_to_unicode() -> dict[int, str]:
    """Return GPT-2's byte (0-255) to character mapping."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    chars = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return {b: chr(c) for b, c in zip(printable, chars, strict=True)}


@functools.cache
def unicode_to_bytes() -> dict[str, int]:
    """Return the inverse of `bytes_to_unicode` (character to byte)."""
    return {c: b for b, c in bytes_to_unicode().items()}


def encode_token(token: bytes) -> str:
    """Map raw token bytes to GPT-2's printable string form."""
    table = bytes_to_unicode()
    return "".join(table[b] for b in token)


def decode_token(text: str) -> bytes:
    """Map GPT-2's printable string form back to raw bytes (KeyError on foreign characters)."""
    table = unicode_to_bytes()
    return bytes(table[c] for c in text)
