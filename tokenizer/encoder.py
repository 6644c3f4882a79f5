"""`Tokenizer`: byte-level BPE encoding and decoding with special tokens."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence

from tokenizer.formats import (
    TokenizerData,
    load_tokenizer_data,
    read_gpt2_merges,
    read_gpt2_vocab,
    save_tokenizer_data,
)
from tokenizer.patterns import compile_pattern, resolve_pattern
from tokenizer.specials import partial_special_suffix, special_pattern, split_specials

_CACHE_LIMIT = 1 << 18
_STREAM_BUFFER = 1 << 16
# Pre-tokens held back at a streaming cut. One is not enough: o200k's optional contraction
# suffix lets "the" grow into "the's" when the held-back "'" is followed by "s".
_HOLD_BACK = 2


class Tokenizer:
    """A byte-level BPE tokenizer built from a vocabulary and an ordered merge list.

    `vocab` maps id to token bytes; `merges` lists byte-string pairs by priority (first
    merges first); `special_tokens` are matched before pre-tokenization, longest first, and
    are added to the vocabulary when their bytes are not already in it. `pattern` is the
    pre-tokenizer name (gpt2, cl100k/gpt4, o200k) or a regex.
    """

    def __init__(
        self,
        vocab: dict[int, bytes],
        merges: Sequence[tuple[bytes, bytes]],
        special_tokens: Sequence[str] | None = None,
        pattern: str = "gpt2",
    ) -> None:
        self.vocab: dict[int, bytes] = dict(vocab)
        self.merges: list[tuple[bytes, bytes]] = [(bytes(a), bytes(b)) for a, b in merges]
        self.pattern = pattern
        self.pattern_regex = resolve_pattern(pattern)
        self._pre = compile_pattern(pattern)
        self.token_to_id: dict[bytes, int] = {}
        for i in sorted(self.vocab):
            self.token_to_id.setdefault(self.vocab[i], i)
        self.special_tokens: dict[str, int] = {}
        next_id = max(self.vocab, default=-1) + 1
        # A special token reuses the id of its bytes unless a merge or a single byte makes
        # those bytes too (a special "the" must not take the id BPE gives to "the").
        bpe_made = {bytes([b]) for b in range(256)} | {a + b for a, b in self.merges}
        for token in dict.fromkeys(special_tokens or []):
            raw = token.encode("utf-8")
            if raw in self.token_to_id and raw not in bpe_made:
                self.special_tokens[token] = self.token_to_id[raw]
            else:
                self.vocab[next_id] = raw
                self.token_to_id.setdefault(raw, next_id)
                self.special_tokens[token] = next_id
                next_id += 1
        self._special_re = special_pattern(list(self.special_tokens))
        missing = [b for b in range(256) if bytes([b]) not in self.token_to_id]
        if missing:
            raise ValueError(f"vocabulary lacks {len(missing)} single-byte tokens, e.g. {missing[0]}")
        self._byte_ids = [self.token_to_id[bytes([b])] for b in range(256)]
        self._ranks: dict[tuple[int, int], tuple[int, int]] = {}
        for rank, (a, b) in enumerate(self.merges):
            try:
                pair = (self.token_to_id[a], self.token_to_id[b])
                merged = self.token_to_id[a + b]
            except KeyError as exc:
                raise ValueError(f"merge {rank} {a!r} + {b!r} uses a token not in the vocab") from exc
            self._ranks.setdefault(pair, (rank, merged))
        self._cache: dict[str, list[int]] = {}

    @classmethod
    def from_files(
        cls,
        vocab_path: str | os.PathLike,
        merges_path: str | os.PathLike,
        special_tokens: Sequence[str] | None = None,
        pattern: str = "gpt2",
    ) -> Tokenizer:
        """Build a tokenizer from GPT-2 style `vocab.json` and `merges.txt` files."""
        return cls(read_gpt2_vocab(vocab_path), read_gpt2_merges(merges_path), special_tokens, pattern)

    @classmethod
    def load(cls, directory: str | os.PathLike) -> Tokenizer:
        """Load a tokenizer written by `save` (its vocab, merges, special tokens and pattern)."""
        data = load_tokenizer_data(directory)
        return cls(data.vocab, data.merges, list(data.special_tokens), pattern=data.pattern)

    def save(self, directory: str | os.PathLike) -> None:
        """Write tokenizer.json (Hugging Face), vocab.json + merges.txt (GPT-2), and
        tokenizer.tiktoken (tiktoken ranks) plus refinery_tokenizer.json into `directory`."""
        save_tokenizer_data(self.to_data(), directory)

    def to_data(self) -> TokenizerData:
        """This tokenizer as plain data (vocab, merges, special tokens, pattern), as saved."""
        return TokenizerData(self.vocab, self.merges, self.special_tokens, self.pattern)

    @property
    def vocab_size(self) -> int:
        """Number of ids: one more than the largest id in the vocabulary."""
        return max(self.vocab) + 1

    def encode(self, text: str) -> list[int]:
        """Encode `text` to token ids (special tokens are recognised anywhere in it)."""
        ids: list[int] = []
        for piece, is_special in split_specials(text, self._special_re):
            if is_special:
                ids.append(self.special_tokens[piece])
            else:
                ids.extend(self._encode_ordinary(piece))
        return ids

    def encode_iterable(self, iterable: Iterable[str]) -> Iterator[int]:
        """Lazily encode a stream of strings (e.g. an open file's lines) in constant memory.

        Yields exactly the ids of `encode("".join(iterable))`: text is buffered and only the
        pre-tokens that more input cannot change are encoded; the last two pre-tokens and any
        suffix that could begin a special token are carried into the next round.
        """
        buffer = ""
        threshold = _STREAM_BUFFER
        for piece in iterable:
            buffer += piece
            if len(buffer) < threshold:
                continue
            ids, cut = self._encode_stable_prefix(buffer)
            yield from ids
            buffer = buffer[cut:]
            threshold = max(_STREAM_BUFFER, 2 * len(buffer))
        if buffer:
            yield from self.encode(buffer)

    def _encode_stable_prefix(self, text: str) -> tuple[list[int], int]:
        """Encode the part of `text` that any continuation leaves unchanged.

        Returns the ids and the offset where the unencoded rest of `text` begins.
        """
        limit = partial_special_suffix(text, list(self.special_tokens))
        ids: list[int] = []
        pos = 0
        if self._special_re is not None:
            for match in self._special_re.finditer(text, 0, limit):
                ids.extend(self._encode_ordinary(text[pos : match.start()]))
                ids.append(self.special_tokens[match.group()])
                pos = match.end()
        piece = text[pos:limit]
        matches = list(self._pre.finditer(piece))
        if len(matches) <= _HOLD_BACK:
            return ids, pos
        encode_word = self._encode_word
        for match in matches[:-_HOLD_BACK]:
            ids.extend(encode_word(match.group()))
        return ids, pos + matches[-_HOLD_BACK].start()

    def _encode_ordinary(self, text: str) -> list[int]:
        """Encode text that contains no special tokens."""
        ids: list[int] = []
        encode_word = self._encode_word
        for word in self._pre.findall(text):
            ids.extend(encode_word(word))
        return ids

    def decode(self, ids: Iterable[int]) -> str:
        """Decode ids to text; invalid UTF-8 becomes U+FFFD. Raises ValueError on unknown ids."""
        return self.decode_bytes(ids).decode("utf-8", errors="replace")

    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        """Concatenate the bytes of the tokens `ids`. Raises ValueError on unknown ids."""
        vocab = self.vocab
        try:
            return b"".join([vocab[i] for i in ids])
        except KeyError as exc:
            raise ValueError(f"unknown token id {exc.args[0]}") from None

    def _encode_word(self, word: str) -> list[int]:
        """BPE-encode one pre-token: repeatedly merge the adjacent pair of lowest merge rank."""
        cached = self._cache.get(word)
        if cached is not None:
            return cached
        byte_ids = self._byte_ids
        ids = [byte_ids[b] for b in word.encode("utf-8")]
        ranks = self._ranks
        while len(ids) > 1:
            best = None
            for pair in zip(ids, ids[1:], strict=False):
                found = ranks.get(pair)
                if found is not None and (best is None or found[0] < best[0]):
                    best = found
                    best_pair = pair
            if best is None:
                break
            a, b = best_pair
            merged_id = best[1]
            out: list[int] = []
            i = 0
            n = len(ids)
            while i < n:
                if i + 1 < n and ids[i] == a and ids[i + 1] == b:
                    out.append(merged_id)
                    i += 2
                else:
                    out.append(ids[i])
                    i += 1
            ids = out
        if len(self._cache) >= _CACHE_LIMIT:
            self._cache.clear()
        self._cache[word] = ids
        return ids
