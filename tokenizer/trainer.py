"""`train_bpe`: byte-level BPE training from text files."""

from __future__ import annotations

import os
from collections.abc import Sequence

from tokenizer.merges import bpe_merges
from tokenizer.patterns import resolve_pattern
from tokenizer.pretokenize import count_pretokens


def train_bpe(
    input_path: str | os.PathLike | Sequence[str | os.PathLike],
    vocab_size: int,
    special_tokens: list[str],
    pattern: str = "gpt2",
    workers: int | None = None,
    progress: bool = False,
    chunk_bytes: int = 16 << 20,
) -> tuple[dict[int, bytes], list[tuple[bytes, bytes]]]:
    """Train a byte-level BPE tokenizer on one file or a list of files (UTF-8 text).

    `vocab_size` counts the special tokens, the 256 bytes and the merges. `pattern` is a
    pre-tokenizer name (gpt2, cl100k/gpt4, o200k) or a regex. Special tokens are cut out of
    the text before pre-tokenization, so no merge crosses them.

    Returns `(vocab, merges)`: vocab maps id to bytes (special tokens first, then the 256
    single bytes, then one token per merge); merges are byte-string pairs in merge order.
    Fewer merges are made if the corpus runs out of pairs.
    """
    specials = list(dict.fromkeys(special_tokens))
    base = len(specials) + 256
    if vocab_size < base:
        raise ValueError(
            f"vocab_size {vocab_size} is smaller than {len(specials)} special tokens + 256 bytes"
        )
    resolve_pattern(pattern)
    if isinstance(input_path, str | os.PathLike):
        paths = [input_path]
    else:
        paths = list(input_path)
    word_counts = count_pretokens(
        paths, specials, pattern, workers=workers, chunk_bytes=chunk_bytes, progress=progress
    )
    tokens, merge_ids = bpe_merges(word_counts, vocab_size - base, progress=progress)
    del word_counts
    vocab: dict[int, bytes] = {i: s.encode("utf-8") for i, s in enumerate(specials)}
    offset = len(specials)
    for i, token in enumerate(tokens):
        vocab[offset + i] = token
    merges = [(tokens[a], tokens[b]) for a, b in merge_ids]
    return vocab, merges
