"""Tests for saved formats: HF tokenizer.json, GPT-2 vocab/merges, tiktoken ranks, FastEncoder."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
import tiktoken
import tokenizers

from tokenizer import Tokenizer, train_bpe
from tokenizer.fast import FastEncoder
from tokenizer.formats import read_tiktoken_ranks, tokenizer_hash
from tokenizer.gpt2_files import gpt2_file_paths

EOT = "<|endoftext|>"
PAD = "<|pad|>"


def real_text(shared: Path) -> str:
    """Held-out Wikipedia, 84-language Tatoeba sentences, code, emoji and special tokens."""
    with gzip.open(shared / "eval" / "wiki_val.jsonl.gz", "rt", encoding="utf-8") as handle:
        wiki = [json.loads(next(handle))["text"] for _ in range(6)]
    tatoeba = (shared / "langid" / "tatoeba_long_cld2.tsv").read_text(encoding="utf-8")
    code = Path(json.__file__).read_text(encoding="utf-8")
    extra = "Emoji 🤗👍🏽 😀 x  \n\n\t  y " + EOT + PAD + "  \r\n 2026-11-25 3.14159 'Ll 'S"
    return EOT.join(wiki) + EOT + tatoeba + code + extra


@pytest.fixture(scope="module")
def text(shared_data: Path) -> str:
    return real_text(shared_data)


@pytest.fixture(scope="module", params=["gpt2", "cl100k", "o200k"])
def trained(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
            shared_data: Path) -> Path:
    """A 1,500-token vocabulary trained on 40 Wikipedia articles + Tatoeba, saved to a dir."""
    docs = []
    path = shared_data / "reference" / "wiki_ref.jsonl.gz"
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        for _ in range(40):
            docs.append(json.loads(next(handle))["text"])
    base = tmp_path_factory.mktemp(f"tok-{request.param}")
    corpus = base / "corpus.txt"
    tatoeba = (shared_data / "langid" / "tatoeba_long_cld2.tsv").read_text(encoding="utf-8")
    corpus.write_text(EOT.join(docs) + EOT + tatoeba, encoding="utf-8")
    vocab, merges = train_bpe(corpus, 1500, [EOT, PAD], pattern=request.param, workers=1)
    out = base / "tok"
    Tokenizer(vocab, merges, [EOT, PAD], pattern=request.param).save(out)
    return out


def test_saved_files_reload_identically(trained: Path, text: str) -> None:
    tok = Tokenizer.load(trained)
    assert tok.special_tokens == {EOT: 0, PAD: 1}
    ids = tok.encode(text)
    assert tok.decode(ids) == text
    again = Tokenizer.from_files(
        trained / "vocab.json", trained / "merges.txt", [EOT, PAD], pattern=tok.pattern
    )
    assert again.vocab == tok.vocab and again.merges == tok.merges
    assert again.encode(text) == ids


def test_hf_tokenizer_json_gives_identical_ids(trained: Path, text: str) -> None:
    tok = Tokenizer.load(trained)
    hf = tokenizers.Tokenizer.from_file(str(trained / "tokenizer.json"))
    assert hf.get_vocab_size() == tok.vocab_size
    ids = tok.encode(text)
    assert hf.encode(text).ids == ids
    assert hf.decode(ids, skip_special_tokens=False) == text
    lines = text.splitlines()[:300]
    assert [e.ids for e in hf.encode_batch(lines)] == [tok.encode(line) for line in lines]


def test_tiktoken_ranks_give_identical_ids(trained: Path, text: str) -> None:
    tok = Tokenizer.load(trained)
    ranks = read_tiktoken_ranks(trained / "tokenizer.tiktoken")
    assert ranks == {tok.vocab[i]: i for i in tok.vocab if i not in (0, 1)}
    enc = tiktoken.Encoding(
        "trained", pat_str=tok.pattern_regex, mergeable_ranks=ranks,
        special_tokens={EOT: 0, PAD: 1},
    )
    assert enc.encode(text, allowed_special="all") == tok.encode(text)
    fast = FastEncoder(trained)
    lines = text.splitlines()
    assert fast.encode_batch(lines, num_threads=2) == [tok.encode(line) for line in lines]
    assert fast.encode(text) == tok.encode(text)
    assert fast.encode_numpy(text).tolist() == tok.encode(text)
    assert [fast.encode_numpy(line).tolist() for line in lines] == [tok.encode(x) for x in lines]


def test_gpt2_saved_formats(tmp_path: Path, text: str) -> None:
    encoder_json, vocab_bpe = gpt2_file_paths()
    gpt2 = Tokenizer.from_files(encoder_json, vocab_bpe, [EOT])
    gpt2.save(tmp_path)
    # Our vocab.json and merges.txt are GPT-2's own files, entry for entry.
    assert json.loads((tmp_path / "vocab.json").read_text(encoding="utf-8")) == json.loads(
        encoder_json.read_text(encoding="utf-8")
    )
    original = [line for line in vocab_bpe.read_text(encoding="utf-8").splitlines()[1:] if line]
    assert (tmp_path / "merges.txt").read_text(encoding="utf-8").splitlines()[1:] == original
    ids = gpt2.encode(text)
    hf = tokenizers.Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
    assert hf.encode(text).ids == ids
    assert FastEncoder(tmp_path).encode(text) == ids


def test_tokenizer_hash_tracks_content(trained: Path, tmp_path: Path) -> None:
    digest = tokenizer_hash(trained)
    assert len(digest) == 64
    tok = Tokenizer.load(trained)
    tok.save(tmp_path / "copy")
    assert tokenizer_hash(tmp_path / "copy") == digest
    smaller = Tokenizer(tok.vocab, tok.merges[:-1], list(tok.special_tokens), tok.pattern)
    smaller.save(tmp_path / "other")
    assert tokenizer_hash(tmp_path / "other") != digest
