"""The native GPT-2-pattern encoder (tokenizer/_encode.c): ids equal `Tokenizer.encode`."""

from __future__ import annotations

import gzip
import json
import random
from collections.abc import Callable
from pathlib import Path

import pytest
import regex

from tokenizer import Tokenizer
from tokenizer import native as native_mod
from tokenizer.fast import FastEncoder
from tokenizer.formats import read_tiktoken_ranks
from tokenizer.gpt2_files import gpt2_file_paths
from tokenizer.native import NativeEncoder, code_point_classes, native_encoder

EOT = "<|endoftext|>"

# fails without the extension unless REFINERY_ALLOW_PURE_PYTHON=1 (tests/conftest.py)
pytestmark = pytest.mark.native("_encode")


@pytest.fixture(scope="module")
def gpt2(tmp_path_factory: pytest.TempPathFactory) -> tuple[Tokenizer, Path]:
    """GPT-2's vocabulary and merges, saved (for FastEncoder) and loaded."""
    encoder_json, vocab_bpe = gpt2_file_paths()
    tok = Tokenizer.from_files(encoder_json, vocab_bpe, special_tokens=[EOT])
    folder = tmp_path_factory.mktemp("gpt2")
    tok.save(folder)
    return tok, folder


@pytest.fixture(scope="module")
def native(gpt2: tuple[Tokenizer, Path]) -> NativeEncoder:
    return NativeEncoder(read_tiktoken_ranks(gpt2[1] / "tokenizer.tiktoken"))


def test_code_point_classes_follow_the_regex_module() -> None:
    table = code_point_classes()
    letter, number, space = (regex.compile(p) for p in (r"\p{L}", r"\p{N}", r"\s"))
    rng = random.Random(0)
    points = list(range(0x3000)) + [rng.randrange(0x110000) for _ in range(20000)]
    for cp in points:
        if 0xD800 <= cp < 0xE000:
            assert table[cp] == 0
            continue
        c = chr(cp)
        expected = 1 if letter.match(c) else 2 if number.match(c) else 3 if space.match(c) else 0
        assert table[cp] == expected, hex(cp)


def test_native_equals_tokenizer_on_samples(
    sample_name: str, sample: Callable, gpt2, native: NativeEncoder
) -> None:
    tok, _ = gpt2
    for text in sample(sample_name).split(EOT):  # special tokens are split out before the encoder
        assert native.encode(text) == tok.encode(text)


def test_native_equals_tokenizer_on_real_documents(shared_data: Path, gpt2, native) -> None:
    tok, _ = gpt2
    docs = []
    with gzip.open(shared_data / "reference" / "wiki_ref.jsonl.gz", "rt", encoding="utf-8") as f:
        docs += [json.loads(line)["text"] for line, _ in zip(f, range(60), strict=False)]
    with gzip.open(shared_data / "noisy" / "spamassassin.jsonl.gz", "rt", encoding="utf-8") as f:
        docs += [json.loads(line)["raw"] for line, _ in zip(f, range(200), strict=False)]
    for doc in docs:
        assert native.encode(doc) == tok.encode(doc)


def test_native_equals_tokenizer_on_random_mixtures(gpt2, native) -> None:
    """Seeded fuzz over the pattern's edge cases: contractions, space runs before words,
    non-space whitespace, combining marks, digits of other scripts, symbols, emoji."""
    tok, _ = gpt2
    pieces = [" ", "  ", "   ", "\n", "\n\n", "\t", "\r\n", "\u3000", "\xa0", "\x1c", "'", "'s",
              "'ll", "'re", "'ve", "'d", "'m", "'t", "'S", "'x", "a", "Zy", "é", "e\u0301",
              "中文", "ß", "1", "٣", "²", "Ⅻ", "!", "?!", "—", "...", "😀", "👍🏽", "-", "_", "$5"]
    rng = random.Random(7)
    for _ in range(5000):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(1, 40)))
        assert native.encode(text) == tok.encode(text), repr(text)
    assert native.encode("") == []


def test_long_pretokens_merge_like_the_short_path(gpt2, native) -> None:
    """Pre-tokens over 128 bytes merge through a heap (bpe_long): same ids as Tokenizer on
    random long words, and as tiktoken on runs of 200,000 characters."""
    tok, folder = gpt2
    rng = random.Random(3)
    for alphabet in ("ab", "aeiou", "thing", "qxz", "é中—"):
        for _ in range(40):
            word = "".join(rng.choice(alphabet) for _ in range(rng.randint(100, 700)))
            assert native.encode(word) == tok.encode(word)
    tiktoken_enc = FastEncoder(folder).encoding
    for run in ("a" * 200_000, "-" * 200_000, "=\n" * 50_000, "ab" * 100_000):
        assert native.encode(run) == tiktoken_enc.encode_ordinary(run)


def test_fast_encoder_uses_native_for_gpt2_and_tiktoken_otherwise(gpt2, tmp_path: Path) -> None:
    tok, folder = gpt2
    fast = FastEncoder(folder)
    assert fast.native is not None
    text = f"Hello{EOT} world's  end\n"
    assert fast.encode_numpy(text).tolist() == fast.encode(text) == tok.encode(text)
    assert fast.encode_batch([text, "x"], num_threads=2) == [tok.encode(text), tok.encode("x")]
    # lone surrogates have no UTF-8 form: FastEncoder takes tiktoken's path, which replaces
    # them (Tokenizer.encode raises instead)
    surrogate = "a\ud800b"
    assert fast.encode_numpy(surrogate).tolist() == fast.encoding.encode_ordinary(surrogate)
    cl100k = Tokenizer(tok.vocab, tok.merges, {EOT: 50256}, pattern="cl100k")
    cl100k.save(tmp_path)
    other = FastEncoder(tmp_path)
    assert other.native is None and other.encode("it's 1234") == cl100k.encode("it's 1234")


def test_native_encoder_is_optional(monkeypatch: pytest.MonkeyPatch, gpt2) -> None:
    ranks = read_tiktoken_ranks(gpt2[1] / "tokenizer.tiktoken")
    monkeypatch.setattr(native_mod, "_encode", None)
    assert native_encoder(ranks, native_mod.GPT2_PATTERN) is None
    with pytest.raises(RuntimeError, match="not built"):
        NativeEncoder(ranks)
