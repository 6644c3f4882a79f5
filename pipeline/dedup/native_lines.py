"""The native line normaliser and hasher (``pipeline/dedup/_lines.c``), when it is built.

It computes, for every line of a text, exactly what the Python reference
``line_hash(normalize_line(line))`` of :mod:`pipeline.dedup.text` computes, about an order of
magnitude faster. The Unicode rules are not compiled into the extension: :func:`line_tables`
derives them here, once per process, from the running interpreter's ``str.casefold`` and the
very regular expressions ``normalize_line`` uses, so both paths agree on every code point
whatever Unicode version the interpreter carries. When the extension is not built,
:func:`available` is ``False`` and :mod:`pipeline.dedup.lines` uses the Python reference.
"""

from __future__ import annotations

import re
from functools import lru_cache

import numpy as np

from pipeline.dedup.text import _DIGIT, _LINE_PUNCT, _WS

try:
    from pipeline.dedup import _lines
except ImportError:  # built by setup.py when a C compiler is there
    _lines = None

N_CODEPOINTS = 0x110000
#: table values (see _lines.c): a separator, an unused expansion slot, an expansion index
SEP, NONE, EXPAND = 0xFFFFFFFF, 0xFFFFFFFE, 0x80000000
_BLOCK = 256


def available() -> bool:
    """Whether the extension ``pipeline.dedup._lines`` is built and importable."""
    return _lines is not None


def _mark(table: np.ndarray, chars: str, pattern: re.Pattern[str], value: int) -> None:
    """Set ``table[cp] = value`` for every code point that ``pattern`` matches in ``chars``
    (``chars`` holds every code point in order, so string index == code point)."""
    for m in pattern.finditer(chars):
        table[m.start():m.end()] = value


def _every_code_point() -> str:
    """Return the string of all 0x110000 code points in order, surrogates included."""
    def decode(lo: int, hi: int) -> str:
        return np.arange(lo, hi, dtype="<u4").tobytes().decode("utf-32-le")

    # UTF-32 refuses surrogates, and "".join(map(chr, ...)) over all of them takes 10x longer
    surrogates = "".join(map(chr, range(0xD800, 0xE000)))
    return decode(0, 0xD800) + surrogates + decode(0xE000, N_CODEPOINTS)


@lru_cache(maxsize=1)
def line_tables() -> tuple[bytes, bytes]:
    """Return (map, expansions) for ``_lines.new``: what each code point becomes in a
    normalised line, per the running Python.

    ``map`` holds one uint32 per code point: ``SEP`` where the character separates words
    (``normalize_line`` turns anything matching ``[^\\w\\s]`` or ``\\s`` into a space), the
    single code point it becomes after ``str.casefold`` and the digit rule (``\\d`` -> ``0``),
    or ``EXPAND | i`` when it folds to several characters: then ``expansions[3i:3i+3]`` are
    their outputs (a code point or ``SEP``), padded with ``NONE``.
    """
    chars = _every_code_point()
    out = np.arange(N_CODEPOINTS, dtype=np.uint32)
    # normalize_line applies the digit rule, then punctuation, then whitespace: classify in
    # that order on the folded characters (a digit is \w, so punctuation never claims it)
    _mark(out, chars, _LINE_PUNCT, SEP)
    _mark(out, chars, _WS, SEP)
    _mark(out, chars, _DIGIT, ord("0"))
    classified = out.copy()  # the output for a character that folds to itself
    expansions: list[int] = []
    for start in range(0, N_CODEPOINTS, _BLOCK):
        block = chars[start:start + _BLOCK]
        if block.casefold() == block:  # casefold maps each character on its own
            continue
        for cp in range(start, start + len(block)):
            folded = chr(cp).casefold()
            if folded == chr(cp):
                continue
            outs = [int(classified[ord(f)]) for f in folded]
            if len(outs) == 1:
                out[cp] = outs[0]
            else:
                if len(outs) > 3:
                    raise RuntimeError(f"casefold of U+{cp:04X} gives {len(outs)} characters")
                out[cp] = EXPAND | (len(expansions) // 3)
                expansions.extend(outs + [NONE] * (3 - len(outs)))
    return out.tobytes(), np.array(expansions, dtype=np.uint32).tobytes()


@lru_cache(maxsize=1)
def _tables() -> object:
    if _lines is None:
        raise RuntimeError("the native line hasher (pipeline.dedup._lines) is not built")
    return _lines.new(*line_tables())


def nonempty_line_hashes(text: str) -> np.ndarray:
    """Return the int64 hash of each line of ``text`` that does not normalise to nothing,
    in order (the reference's ``line_hashes`` without its ``None`` entries)."""
    return np.frombuffer(_lines.nonempty(_tables(), text), dtype=np.int64)


def every_line_hash(text: str) -> tuple[np.ndarray, np.ndarray]:
    """Return (int64 hash per line of ``text``, bool per line: it normalises to something).

    Lines are ``text.split("\\n")``; an empty line's hash is 0 and its flag False.
    """
    hashes, flags = _lines.every(_tables(), text)
    return np.frombuffer(hashes, dtype=np.int64), np.frombuffer(flags, dtype=bool)
