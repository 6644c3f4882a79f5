"""Parallel pre-token counting over chunks of the input files, cut where no pre-token spans.

With special tokens, a chunk boundary is always placed at the start of a special token (the
document separator), so no document is ever cut in the middle. Without special tokens and
with one of the built-in patterns (gpt2, cl100k, o200k), a boundary is placed between an
ASCII letter and a following space. No pre-token of those patterns crosses that point
(letter runs never take a trailing space, and the optional contraction suffix starts with
an apostrophe), nothing in them looks behind, and the only end-of-text sensitive parts
(`$`, `(?!\\S)`) follow whitespace, which a letter is not: so each side splits exactly as in
the whole text. Cuts fall on ASCII bytes, so UTF-8 decoding (even with replacement) is
unchanged too. Either way the counts are exactly those of the whole text, whatever the
number of workers. A custom regex gives one chunk per file.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import re
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from tqdm import tqdm

from tokenizer.patterns import NAMED_PATTERNS, compile_pattern
from tokenizer.specials import special_pattern, split_specials

_SCAN_BLOCK = 1 << 20
# A safe cut for the built-in patterns: between the letter and the space of this match.
_TEXT_CUT = re.compile(rb"[A-Za-z] ")


@dataclass(frozen=True)
class Chunk:
    """A byte range `[start, end)` of one input file."""

    path: str
    start: int
    end: int


def _scan(handle, position: int, size: int, find: Callable[[bytes], int], overlap: int) -> int:
    """Return the file offset of the first hit of `find` at or after `position`, or `size`.

    The file is read in blocks; `find(data)` returns an index into `data` or -1, and the
    last `overlap` bytes of a block are searched again with the next one, so a hit that
    straddles two blocks is found.
    """
    handle.seek(position)
    base = position
    carry = b""
    while base < size:
        block = handle.read(_SCAN_BLOCK)
        if not block:
            break
        data = carry + block
        hit = find(data)
        if hit >= 0:
            return base - len(carry) + hit
        carry = data[-overlap:] if overlap else b""
        base += len(block)
    return size


def _next_special(handle, position: int, needles: Sequence[bytes], size: int) -> int:
    """Return the offset of the first needle at or after `position`, or `size` if none."""

    def find(data: bytes) -> int:
        hits = [i for i in (data.find(n) for n in needles) if i >= 0]
        return min(hits) if hits else -1

    return _scan(handle, position, size, find, max(len(n) for n in needles) - 1)


def _next_text_cut(handle, position: int, size: int) -> int:
    """Offset of the first space after an ASCII letter (a safe cut) after `position`."""

    def find(data: bytes) -> int:
        match = _TEXT_CUT.search(data)
        return match.start() + 1 if match else -1

    return _scan(handle, position, size, find, 1)


def is_builtin_pattern(pattern: str | None) -> bool:
    """Whether `pattern` is a built-in pre-tokenizer (by name or by its exact regex source)."""
    return pattern is not None and (pattern in NAMED_PATTERNS or pattern in NAMED_PATTERNS.values())


def find_chunks(
    paths: Iterable[str | os.PathLike],
    special_tokens: Sequence[str],
    target_bytes: int,
    pattern: str | None = None,
) -> list[Chunk]:
    """Split the files into chunks of about `target_bytes` at points no pre-token crosses.

    With special tokens, every cut is at a special token start. Without them, cuts are between
    an ASCII letter and a space (see the module doc) when `pattern` is a built-in pattern;
    otherwise every file is a single chunk. Returns the chunks in file order.
    """
    needles = [s.encode("utf-8") for s in special_tokens if s]
    text_cuts = not needles and is_builtin_pattern(pattern)
    chunks: list[Chunk] = []
    for raw_path in paths:
        path = os.fspath(raw_path)
        size = os.path.getsize(path)
        if not (needles or text_cuts) or size <= target_bytes:
            chunks.append(Chunk(path, 0, size))
            continue
        bounds = [0]
        with open(path, "rb") as handle:
            while bounds[-1] < size:
                want = bounds[-1] + target_bytes
                if want >= size:
                    bounds.append(size)
                    break
                if needles:
                    cut = _next_special(handle, want, needles, size)
                else:
                    cut = _next_text_cut(handle, want, size)
                bounds.append(cut)
        chunks.extend(Chunk(path, s, e) for s, e in zip(bounds, bounds[1:], strict=False) if e > s)
    return chunks


def count_text(text: str, special_tokens: Sequence[str], pattern: str) -> Counter[str]:
    """Count the pre-tokens of `text` (special tokens removed first, never part of a pre-token)."""
    compiled = compile_pattern(pattern)
    splitter = special_pattern(special_tokens)
    counts: Counter[str] = Counter()
    for piece, is_special in split_specials(text, splitter):
        if not is_special:
            counts.update(compiled.findall(piece))
    return counts


def _count_chunk(job: tuple[Chunk, tuple[str, ...], str]) -> tuple[int, dict[bytes, int]]:
    """Worker: read one chunk, count its pre-tokens; returns (bytes read, counts by bytes)."""
    chunk, special_tokens, pattern = job
    with open(chunk.path, "rb") as handle:
        handle.seek(chunk.start)
        data = handle.read(chunk.end - chunk.start)
    counts = count_text(data.decode("utf-8", errors="replace"), special_tokens, pattern)
    return len(data), {word.encode("utf-8"): n for word, n in counts.items()}


def count_pretokens(
    paths: Sequence[str | os.PathLike],
    special_tokens: Sequence[str],
    pattern: str = "gpt2",
    workers: int | None = None,
    chunk_bytes: int = 16 << 20,
    progress: bool = True,
) -> dict[bytes, int]:
    """Count pre-tokens (as UTF-8 bytes) over all files, in parallel over chunks (`find_chunks`).

    `workers` defaults to the CPU count; 1 runs in this process. Returns {pre-token: count}.
    """
    chunks = find_chunks(paths, special_tokens, chunk_bytes, pattern)
    total_bytes = sum(c.end - c.start for c in chunks)
    jobs = [(c, tuple(special_tokens), pattern) for c in chunks]
    workers = workers or os.cpu_count() or 1
    totals: dict[bytes, int] = {}
    bar = tqdm(
        total=total_bytes, unit="B", unit_scale=True, desc="pre-tokenize", disable=not progress
    )

    def merge(result: tuple[int, dict[bytes, int]]) -> None:
        nbytes, counts = result
        if not totals:
            totals.update(counts)
        else:
            get = totals.get
            for word, n in counts.items():
                totals[word] = get(word, 0) + n
        bar.update(nbytes)

    try:
        if workers <= 1 or len(jobs) <= 1:
            for job in jobs:
                merge(_count_chunk(job))
        else:
            ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
            with ctx.Pool(min(workers, len(jobs))) as pool:
                for result in pool.imap_unordered(_count_chunk, jobs):
                    merge(result)
    finally:
        bar.close()
    return totals
