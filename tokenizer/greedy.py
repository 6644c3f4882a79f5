"""Greedy longest-match encoding over a fixed vocabulary.

The alternative to BPE's merge order that the notes describe for a fixed vocabulary: within
each pre-token, take the longest vocabulary entry that matches at the current position, then
continue after it, left to right. Special tokens are split out first and pre-tokenization
is the same as BPE's, so only the encoding of each pre-token differs. Every single byte is in
the vocabulary, so a match always exists and decoding the ids gives the text back.

It is not how the vocabulary was trained, so it often needs more tokens than BPE on the
same text; ``tokenizer encode --method greedy --show TEXT`` prints both.
"""

from __future__ import annotations

from tokenizer.encoder import _CACHE_LIMIT, Tokenizer


class GreedyTokenizer(Tokenizer):
    """A :class:`Tokenizer` whose pre-tokens are encoded by longest vocabulary match.

    ``encode``, ``encode_iterable`` and ``decode`` behave as the base class's, with the
    word encoder replaced. Special tokens are never matched inside ordinary text. Build one
    with :meth:`Tokenizer.load` on this class or :meth:`from_tokenizer`.
    """

    @classmethod
    def from_tokenizer(cls, tok: Tokenizer) -> GreedyTokenizer:
        """Return the greedy encoder over ``tok``'s vocabulary, specials and pattern."""
        return cls(tok.vocab, tok.merges, list(tok.special_tokens), pattern=tok.pattern)

    def _encode_word(self, word: str) -> list[int]:
        """Encode one pre-token by longest match, left to right."""
        cached = self._cache.get(word)
        if cached is not None:
            return cached
        if not hasattr(self, "_match_lengths"):
            specials = {raw.encode("utf-8") for raw in self.special_tokens}
            self._matchable = {raw: i for raw, i in self.token_to_id.items()
                               if raw not in specials or len(raw) == 1}
            # only lengths that occur in the vocabulary are tried, longest first
            self._match_lengths = sorted({len(raw) for raw in self._matchable}, reverse=True)
        raw = word.encode("utf-8")
        vocab, lengths = self._matchable, self._match_lengths
        out: list[int] = []
        pos, end = 0, len(raw)
        while pos < end:
            for n in lengths:
                if pos + n <= end:
                    found = vocab.get(raw[pos : pos + n])
                    if found is not None:
                        out.append(found)
                        pos += n
                        break
        if len(self._cache) >= _CACHE_LIMIT:
            self._cache.clear()
        self._cache[word] = out
        return out
