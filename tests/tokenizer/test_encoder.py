"""Tests for `Tokenizer`: GPT-2 equality with tiktoken, round trips, specials, streaming."""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path

import pytest
import tiktoken

from tokenizer import Tokenizer, encoder
from tokenizer.gpt2_files import gpt2_file_paths, tiktoken_gpt2

EOT = "<|endoftext|>"


@pytest.fixture(scope="module")
def gpt2() -> Tokenizer:
    """GPT-2's own vocabulary and merges, read from vocab.json-style files."""
    encoder_json, vocab_bpe = gpt2_file_paths()
    return Tokenizer.from_files(encoder_json, vocab_bpe, special_tokens=[EOT])


@pytest.fixture(scope="module")
def reference() -> tiktoken.Encoding:
    """tiktoken's gpt2 encoding (offline copy of the same files)."""
    return tiktoken_gpt2()


def test_gpt2_vocab_loaded(gpt2: Tokenizer) -> None:
    assert gpt2.vocab_size == 50257
    assert len(gpt2.merges) == 50000
    assert gpt2.special_tokens == {EOT: 50256}
    assert gpt2.vocab[50256] == EOT.encode()


def test_gpt2_equals_tiktoken(
    gpt2: Tokenizer, reference: tiktoken.Encoding, sample: Callable, sample_name: str
) -> None:
    text = sample(sample_name)
    ids = gpt2.encode(text)
    assert ids == reference.encode(text, allowed_special="all")
    assert gpt2.decode(ids) == text


def test_gpt2_known_ids(gpt2: Tokenizer) -> None:
    # "Hello world" is [15496, 995] in GPT-2; the EOT id is 50256.
    assert gpt2.encode("Hello world" + EOT) == [15496, 995, 50256]


def test_decode_invalid_utf8_is_replaced(gpt2: Tokenizer) -> None:
    ids = gpt2.encode("你好")
    assert len(ids) > 1
    broken = gpt2.decode(ids[:1])
    assert "\ufffd" in broken
    byte_ids = [gpt2.token_to_id[bytes([b])] for b in b"\xff\xfeok\xc3"]
    assert gpt2.decode(byte_ids) == "\ufffd\ufffdok\ufffd"
    with pytest.raises(ValueError):
        gpt2.decode([10**9])


def test_overlapping_special_tokens_longest_wins(gpt2: Tokenizer) -> None:
    specials = ["<|a|>", "<|a|><|b|>", "<|a|><|b|><|c|>"]
    tok = Tokenizer(gpt2.vocab, gpt2.merges, special_tokens=specials)
    ids = {s: tok.special_tokens[s] for s in specials}
    assert len(set(ids.values())) == 3 and min(ids.values()) >= 50257
    text = "x<|a|><|b|>y<|a|>z<|a|><|b|><|c|><|a|><|b|"
    out = tok.encode(text)
    assert out.count(ids["<|a|><|b|>"]) == 1
    assert out.count(ids["<|a|>"]) == 2
    assert out.count(ids["<|a|><|b|><|c|>"]) == 1
    assert tok.decode(out) == text


def test_special_text_without_special_tokens(gpt2: Tokenizer) -> None:
    plain = Tokenizer(gpt2.vocab, gpt2.merges)
    ids = plain.encode(EOT)
    assert 50256 not in ids and plain.decode(ids) == EOT


@pytest.mark.parametrize("piece_size", [1, 7, 1000])
def test_encode_iterable_equals_encode(
    gpt2: Tokenizer, monkeypatch: pytest.MonkeyPatch, sample: Callable, wiki: Callable,
    piece_size: int,
) -> None:
    monkeypatch.setattr(encoder, "_STREAM_BUFFER", 64)
    names = ["whitespace", "specials", "emoji", "german"]
    text = "".join(sample(name) for name in names)
    text += wiki(2)[:20000]
    pieces = (text[i : i + piece_size] for i in range(0, len(text), piece_size))
    assert list(gpt2.encode_iterable(pieces)) == gpt2.encode(text)


def test_encode_iterable_over_file_lines(
    gpt2: Tokenizer, tmp_path: Path, sample: Callable, wiki: Callable
) -> None:
    text = wiki(25) + "\n" + sample("code")
    text += sample("whitespace")
    path = tmp_path / "big.txt"
    path.write_text(text, encoding="utf-8")
    with open(path, encoding="utf-8", newline="") as handle:
        streamed = gpt2.encode_iterable(handle)
        first = next(streamed)
        rest = list(streamed)
    assert [first, *rest] == gpt2.encode(text)


@pytest.mark.parametrize("pattern", ["gpt2", "cl100k", "o200k"])
def test_encode_iterable_at_every_cut(
    gpt2: Tokenizer, monkeypatch: pytest.MonkeyPatch, pattern: str
) -> None:
    # Texts mixing the constructs whose pre-tokens depend on what follows: whitespace runs
    # before newlines (cl100k's `\s*[\r\n]`), trailing whitespace, contractions that o200k
    # glues onto the previous word, digit groups, and special tokens split across pieces.
    # A small buffer puts stream cuts everywhere. Encoding text[:cut] alone, or holding back
    # only the last pre-token, fails here for gpt2 and o200k respectively.
    monkeypatch.setattr(encoder, "_STREAM_BUFFER", 8)
    tok = Tokenizer(gpt2.vocab, gpt2.merges, special_tokens=[EOT], pattern=pattern)
    rng = random.Random(0)
    parts = ["\n", " ", "  ", "\t", "the", "b", "1", "234", ".", "\r\n", EOT, "'s", "'l", "é", "你"]
    for _ in range(150):
        text = "".join(rng.choice(parts) for _ in range(60))
        for size in (1, 3, 5):
            pieces = [text[i : i + size] for i in range(0, len(text), size)]
            assert list(tok.encode_iterable(pieces)) == tok.encode(text), (text, size)


def test_encode_iterable_is_lazy(gpt2: Tokenizer) -> None:
    consumed = 0

    def lines():
        nonlocal consumed
        while True:
            consumed += 1
            yield "the quick brown fox jumps over the lazy dog\n"

    stream = gpt2.encode_iterable(lines())
    got = [next(stream) for _ in range(50_000)]
    assert len(got) == 50_000
    # 50,000 ids are ~5,000 lines; an eager encoder would never return.
    assert consumed < 10_000


def test_bad_vocab_is_rejected() -> None:
    vocab = {i: bytes([i]) for i in range(255)}
    with pytest.raises(ValueError):
        Tokenizer(vocab, [])
    full = {i: bytes([i]) for i in range(256)}
    with pytest.raises(ValueError):
        Tokenizer(full, [(b"a", b"b")])


def test_special_token_equal_to_a_bpe_token_gets_its_own_id(gpt2: Tokenizer) -> None:
    tok = Tokenizer(gpt2.vocab, gpt2.merges, special_tokens=["the", EOT])
    assert tok.special_tokens[EOT] == 50256
    the_id = tok.special_tokens["the"]
    assert the_id == 50257 and gpt2.encode("the") == [1169]
    # Special tokens match anywhere, also inside words.
    assert tok.encode("the cat bathe") == [the_id, *gpt2.encode(" cat ba"), the_id]
    assert tok.decode([the_id, 1169]) == "thethe"
