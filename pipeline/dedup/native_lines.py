"""The native line normaliser and hasher (``pipeline/dedup/_lines.c``), when it is built.

It computes, for every line of a text, exactly what the Python reference
``line_hash(normalize_line(line))`` of :mod:`pipeline.dedup.text` computes, about an order of
magnitude faster. The Unicode rules are not compiled into the extension: :func:`line_tables`
derives them here, once per process, from the running interpreter's ``str.casefold`` and the
very regular expressions ``normalize_line`` uses, so both paths agree on every code point
whatever Unicode version the interpreter carries. :func:`cut_lines` removes frequent lines
from a whole Arrow text column in C (the apply side of ``dedup_lines_v1``). When the
extension is not built,
:func:`available` is ``False`` and :mod:`pipeline.dedup.lines` uses the Python reference.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import pyarrow as pa

from pipeline.dedup.text import _DIGIT, _LINE_PUNCT, _WS, utf8_buffers

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


def can_cut() -> bool:
    """Whether the built extension has :func:`cut_lines`'s kernel (a build older than it
    does not; rebuild with ``make`` or ``setup.py build_ext --inplace``)."""
    return _lines is not None and hasattr(_lines, "cut")


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


def can_hash_columns() -> bool:
    """Whether the built extension has :func:`column_line_hashes`'s kernel."""
    return _lines is not None and hasattr(_lines, "column")


def column_line_hashes(text: pa.Array) -> np.ndarray:
    """Return :func:`nonempty_line_hashes` of every string of ``text`` (an Arrow string
    array without nulls), concatenated, computed in C over the Arrow buffers (no Python
    string per document); ``large_string`` columns too (the kernel reads int32 offsets, which
    :func:`~pipeline.dedup.text.utf8_buffers` gives for any column under 2 GiB of text).

    Raises ValueError for nulls, malformed UTF-8 or 2 GiB of text or more (the caller falls
    back to Python).
    """
    if text.null_count:
        raise ValueError("the text column has nulls")
    if len(text) == 0:
        return np.zeros(0, dtype=np.int64)
    data, off = utf8_buffers(text, np.int32)
    return np.frombuffer(_lines.column(_tables(), off, data), dtype=np.int64)


def every_line_hash(text: str) -> tuple[np.ndarray, np.ndarray]:
    """Return (int64 hash per line of ``text``, bool per line: it normalises to something).

    Lines are ``text.split("\\n")``; an empty line's hash is 0 and its flag False.
    """
    hashes, flags = _lines.every(_tables(), text)
    return np.frombuffer(hashes, dtype=np.int64), np.frombuffer(flags, dtype=bool)


@lru_cache(maxsize=1)
def space_bitmap() -> bytes:
    """Return one bit per code point, set where ``str.isspace`` is true (what ``str.strip``
    and ``str.split`` treat as whitespace), little-endian bit order within each byte."""
    space = np.zeros(N_CODEPOINTS, dtype=bool)
    _mark(space, _every_code_point(), _WS, True)  # re's \s on str is str.isspace
    return np.packbits(space, bitorder="little").tobytes()


@dataclass
class LineCut:
    """What cutting frequent lines did to each string of a text column.

    ``text``: the column without the lines (strings with none cut are unchanged);
    ``lines_removed`` (int32) and ``chars_removed`` (int64, a cut line's characters + 1) as
    :func:`pipeline.dedup.lines.remove_lines` counts them; ``chars_left`` (int64,
    ``len(text.strip())``) and ``words_left`` (int64, ``len(text.split())``, counted up to
    the ``word_cap`` of :func:`cut_lines`) of the result.
    """

    text: pa.Array
    lines_removed: np.ndarray
    chars_removed: np.ndarray
    chars_left: np.ndarray
    words_left: np.ndarray


def cut_lines(text: pa.Array, frequent: np.ndarray, word_cap: int = 2**62) -> LineCut:
    """Cut from every string of ``text`` (an Arrow string array without nulls) the lines
    whose hash is in ``frequent`` (sorted int64), in C over the Arrow buffers: the same
    strings and counts as :func:`pipeline.dedup.lines.remove_lines` on each. Words left
    are counted up to ``word_cap`` (exact below it; a small cap saves the scan). A
    ``large_string`` column is read in place (its result is a ``string`` array).

    Raises ValueError for nulls, malformed UTF-8 or 2 GiB of text or more (the caller falls
    back to Python).
    """
    if text.null_count:
        raise ValueError("the text column has nulls")
    data, off = utf8_buffers(text, np.int32)
    freq = np.ascontiguousarray(frequent, dtype=np.int64)
    new_off, new_data, removed, chars, left, words = _lines.cut(
        _tables(), off, data, freq, space_bitmap(), word_cap)
    out = pa.Array.from_buffers(pa.string(), len(text),
                                [None, pa.py_buffer(new_off), pa.py_buffer(new_data)])
    return LineCut(out, np.frombuffer(removed, dtype=np.int32),
                   np.frombuffer(chars, dtype=np.int64), np.frombuffer(left, dtype=np.int64),
                   np.frombuffer(words, dtype=np.int64))
