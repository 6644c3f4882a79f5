"""Fast encoding of a saved tokenizer: the native encoder, else tiktoken (Rust).

Special tokens are split out in Python with the same longest-first rule as `Tokenizer`, and
only the ordinary text between them is encoded: by the native GPT-2-pattern encoder
(`tokenizer.native`, about 3x tiktoken per core) when the tokenizer uses that pattern and
the extension is built, otherwise by tiktoken loaded with the tokenizer's ranks. Either way
the ids equal `Tokenizer.encode` (the tests check this on real text).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import tiktoken

from tokenizer.formats import CONFIG_FILE, TIKTOKEN_FILE, read_tiktoken_ranks
from tokenizer.native import native_encoder
from tokenizer.patterns import resolve_pattern
from tokenizer.specials import special_pattern, split_specials


class FastEncoder:
    """Batch encoder over a tokenizer directory written by `Tokenizer.save`."""

    def __init__(self, directory: str | os.PathLike) -> None:
        base = Path(directory)
        config = json.loads((base / CONFIG_FILE).read_text(encoding="utf-8"))
        self.special_tokens: dict[str, int] = {k: int(v) for k, v in config["special_tokens"].items()}
        ranks = read_tiktoken_ranks(base / TIKTOKEN_FILE)
        self.encoding = tiktoken.Encoding(
            name=f"refinery:{base.name}",
            pat_str=resolve_pattern(config["pattern"]),
            mergeable_ranks=ranks,
            special_tokens=self.special_tokens,
        )
        self._special_re = special_pattern(list(self.special_tokens))
        self.native = native_encoder(ranks, resolve_pattern(config["pattern"]))
        self.vocab_size = max([*ranks.values(), *self.special_tokens.values()]) + 1

    def encode(self, text: str) -> list[int]:
        """Encode one text; ids equal `Tokenizer.encode(text)`."""
        return self.encode_batch([text], num_threads=1)[0]

    def encode_batch(self, texts: Sequence[str], num_threads: int = 1) -> list[list[int]]:
        """Encode many texts with `num_threads` tiktoken threads; one id list per text."""
        if self._special_re is None:
            return self._ordinary(list(texts), num_threads)
        pieces: list[str] = []
        layout: list[list[int | str]] = []
        for text in texts:
            parts: list[int | str] = []
            for piece, is_special in split_specials(text, self._special_re):
                if is_special:
                    parts.append(self.special_tokens[piece])
                else:
                    parts.append(piece)
                    pieces.append(piece)
            layout.append(parts)
        encoded = iter(self._ordinary(pieces, num_threads))
        out: list[list[int]] = []
        for parts in layout:
            ids: list[int] = []
            for part in parts:
                if isinstance(part, int):
                    ids.append(part)
                else:
                    ids.extend(next(encoded))
            out.append(ids)
        return out

    def _ordinary(self, texts: list[str], num_threads: int) -> list[list[int]]:
        """The ordinary encoding (no special tokens) of each text."""
        if self.native is not None:
            if num_threads <= 1:
                return [self._native_ids(t).tolist() for t in texts]
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(num_threads) as pool:  # the C encoder releases the GIL
                return [a.tolist() for a in pool.map(self._native_ids, texts)]
        if num_threads <= 1:
            encode = self.encoding.encode_ordinary
            return [encode(t) for t in texts]
        return self.encoding.encode_ordinary_batch(texts, num_threads=num_threads)

    def encode_numpy(self, text: str) -> np.ndarray:
        """Encode one text to a uint32 numpy array (no Python int list; the fast path).

        Ids equal `encode(text)`. tiktoken's own special-token handling is off: special
        tokens are split out here first, as in `Tokenizer`.
        """
        if self.native is not None and self._special_re is None:
            return self._native_ids(text)
        if self._special_re is None:
            # tiktoken's encode() with no special tokens at all scans an empty regex per
            # character, so go through encode_ordinary here.
            return np.asarray(self.encoding.encode_ordinary(text), dtype=np.uint32)
        parts: list[np.ndarray] = []
        for piece, is_special in split_specials(text, self._special_re):
            if is_special:
                parts.append(np.array([self.special_tokens[piece]], dtype=np.uint32))
            elif self.native is not None:
                parts.append(self._native_ids(piece))
            else:
                parts.append(self.encoding.encode_to_numpy(piece, disallowed_special=()))
        if len(parts) == 1:
            return parts[0]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.uint32)

    def _native_ids(self, text: str) -> np.ndarray:
        """Native ordinary encoding. Text without a UTF-8 form (lone surrogates) goes through
        tiktoken, which replaces them; `Tokenizer.encode` raises on such text instead."""
        try:
            return self.native.encode_numpy(text)  # type: ignore[union-attr]
        except UnicodeEncodeError:
            return np.asarray(self.encoding.encode_ordinary(text), dtype=np.uint32)
