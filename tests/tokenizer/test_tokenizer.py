"""Tests for the BPE trainer: reference equality, special tokens, ties, patterns, workers, CLI."""

from __future__ import annotations

import gzip
import json
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
import regex

from tokenizer import Tokenizer, train_bpe
from tokenizer.cli import main as cli_main
from tokenizer.patterns import NAMED_PATTERNS, resolve_pattern
from tokenizer.pretokenize import count_pretokens, find_chunks

EOT = "<|endoftext|>"


@pytest.fixture(scope="module")
def wiki_texts(shared_data: Path) -> Callable[..., list[str]]:
    """``(n, start=0) ->`` the first `n` Wikipedia articles (after `start`) of the shared
    reference set."""

    def texts(n: int, start: int = 0) -> list[str]:
        out = []
        path = shared_data / "reference" / "wiki_ref.jsonl.gz"
        with gzip.open(path, "rt", encoding="utf-8") as handle:
            for i, line in enumerate(handle):
                if i >= start + n:
                    break
                if i >= start:
                    out.append(json.loads(line)["text"])
        return out

    return texts


@pytest.fixture(scope="module")
def tatoeba_texts(shared_data: Path) -> Callable[[], list[str]]:
    """``() ->`` long Tatoeba sentences in 84 languages (Latin, CJK, Cyrillic, Arabic, ...)."""
    path = shared_data / "langid" / "tatoeba_long_cld2.tsv"
    return lambda: [ln.split("\t")[3] for ln in path.read_text(encoding="utf-8").splitlines()[1:]]


@pytest.fixture(scope="module")
def tiny_corpus(tmp_path_factory: pytest.TempPathFactory, tatoeba_texts: Callable,
                wiki_texts: Callable) -> Path:
    """About 23 KB of real text for the slow reference comparisons (the textbook trainer
    recounts every pair at every merge: its time grows with the text). Its 400 merges
    include every rule the trainers must agree on: 300+ count ties broken by the greater
    pair, overlapping pairs (a word with the pair twice in a row), merges of two merged
    tokens, merges inside multi-byte UTF-8 characters, and documents cut at the special
    token."""
    docs = [t[:1500] for t in wiki_texts(8)] + tatoeba_texts()[::15]
    path = tmp_path_factory.mktemp("corpus") / "tiny.txt"
    path.write_text(EOT.join(docs), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def small_corpus(tmp_path_factory: pytest.TempPathFactory, tatoeba_texts: Callable,
                 wiki_texts: Callable) -> Path:
    """About 150 KB of real text: Wikipedia articles and multilingual sentences, EOT-joined."""
    docs = [t[:6000] for t in wiki_texts(20)] + tatoeba_texts()
    path = tmp_path_factory.mktemp("corpus") / "small.txt"
    path.write_text(EOT.join(docs), encoding="utf-8")
    return path


def reference_bpe(
    text: str, vocab_size: int, specials: list[str], pattern: str
) -> list[tuple[bytes, bytes]]:
    """Textbook BPE: recount every pair over all words at every step (slow, obviously right)."""
    pieces = regex.split("|".join(regex.escape(s) for s in specials), text) if specials else [text]
    pre = regex.compile(resolve_pattern(pattern))
    counts = Counter(w for piece in pieces for w in pre.findall(piece))
    words = {tuple(bytes([b]) for b in w.encode("utf-8")): c for w, c in counts.items()}
    merges = []
    while len(merges) < vocab_size - 256 - len(specials):
        pairs: Counter[tuple[bytes, bytes]] = Counter()
        for word, c in words.items():
            for pair in zip(word, word[1:], strict=False):
                pairs[pair] += c
        if not pairs:
            break
        best = max(pairs.items(), key=lambda kv: (kv[1], kv[0]))[0]
        merges.append(best)
        new_words = {}
        for word, c in words.items():
            out, i = [], 0
            while i < len(word):
                if i + 1 < len(word) and (word[i], word[i + 1]) == best:
                    out.append(word[i] + word[i + 1])
                    i += 2
                else:
                    out.append(word[i])
                    i += 1
            new_words[tuple(out)] = new_words.get(tuple(out), 0) + c
        words = new_words
    return merges


@pytest.mark.parametrize("pattern", ["gpt2", "cl100k"])
def test_matches_reference_implementation(tiny_corpus: Path, pattern: str) -> None:
    vocab, merges = train_bpe(tiny_corpus, 257 + 400, [EOT], pattern=pattern, workers=1)
    text = tiny_corpus.read_text(encoding="utf-8")
    assert merges == reference_bpe(text, 257 + 400, [EOT], pattern)
    assert vocab[0] == EOT.encode()
    assert [vocab[1 + b] for b in range(256)] == [bytes([b]) for b in range(256)]
    assert [vocab[257 + i] for i in range(len(merges))] == [a + b for a, b in merges]
    assert len(vocab) == 257 + 400


def test_independent_of_workers_and_chunking(small_corpus: Path) -> None:
    one = train_bpe(small_corpus, 600, [EOT], workers=1)
    many = train_bpe(small_corpus, 600, [EOT], workers=2, chunk_bytes=8_000)
    assert one == many


def test_chunks_cut_only_at_special_tokens(small_corpus: Path) -> None:
    chunks = find_chunks([small_corpus], [EOT], 5_000)
    data = small_corpus.read_bytes()
    assert len(chunks) > 10
    assert chunks[0].start == 0 and chunks[-1].end == len(data)
    for before, after in zip(chunks, chunks[1:], strict=False):
        assert before.end == after.start
        assert data[after.start :].startswith(EOT.encode())
    serial = count_pretokens([small_corpus], [EOT], workers=1, chunk_bytes=1 << 30, progress=False)
    parallel = count_pretokens([small_corpus], [EOT], workers=2, chunk_bytes=5_000, progress=False)
    assert serial == parallel


TRICKY = (
    "x.\n/abc x  \nword '\nAb 12\nCd \u00a0\nEf x\r\nGh ?!\nIj 's\nKl caf\u00e9\nMn "
    "a.\n\nOp q\n\tRs t\n Uv w:\nXy \ufffd\nZa 7\n8b \u4e2d\nCd e\n don't  x   y \n"
    "He's  ''s Ab   \n q\u0301 \u00e9 caf\u00e9 z \u00a0 w\u2028 x\u3000 e\u0301 A \r\n Z \t"
)


@pytest.mark.parametrize("pattern", ["gpt2", "cl100k", "o200k"])
def test_text_cuts_without_special_tokens(tmp_path: Path, pattern: str, shared_data: Path,
                                          tatoeba_texts: Callable, wiki_texts: Callable) -> None:
    # Raw e-mails (CRLF, tabs, odd whitespace), Wikipedia, many languages, no special token.
    # Cutting at every safe point (letter | space) must count exactly what the whole text does.
    with gzip.open(shared_data / "noisy" / "spamassassin.jsonl.gz", "rt", encoding="utf-8") as handle:
        mails = [json.loads(line)["raw"] for _, line in zip(range(150), handle, strict=False)]
    text = "\n".join([TRICKY, *mails, *(t[:3000] for t in wiki_texts(15)), *tatoeba_texts()[::4]])
    path = tmp_path / "plain.txt"
    path.write_bytes(text.encode("utf-8") + b"\xe2\x82\n" + b"broken utf-8 before\nAnd after")
    chunks = find_chunks([path], [], 1, pattern)
    assert len(chunks) > 10_000
    data = path.read_bytes()
    for before, after in zip(chunks, chunks[1:], strict=False):
        assert before.end == after.start
        assert data[after.start - 1 : after.start].isalpha()  # an ASCII letter, then a space
        assert data[after.start : after.start + 1] == b" "
    whole = count_pretokens([path], [], pattern, workers=1, chunk_bytes=1 << 30, progress=False)
    every_cut = count_pretokens([path], [], pattern, workers=1, chunk_bytes=1, progress=False)
    assert every_cut == whole
    parallel = count_pretokens([path], [], pattern, workers=2, chunk_bytes=20_000, progress=False)
    assert parallel == whole


def test_custom_regex_without_special_tokens_is_one_chunk(small_corpus: Path) -> None:
    assert len(find_chunks([small_corpus], [], 5_000, r"\S+|\s+")) == 1
    assert len(find_chunks([small_corpus], [], 5_000, None)) == 1
    assert len(find_chunks([small_corpus], [], 5_000, "gpt2")) > 10


def test_no_merge_crosses_special_tokens(tmp_path: Path, wiki_texts: Callable) -> None:
    # Every document ends right before the special token and starts right after it: if the
    # text around it were merged with it, pieces like b"!<|" or b"|>The" would appear.
    docs = [t[:2000] + "!" for t in wiki_texts(30)]
    path = tmp_path / "docs.txt"
    path.write_text(EOT.join(docs) + EOT, encoding="utf-8")
    vocab, merges = train_bpe(path, 1000, [EOT], workers=1)
    assert vocab[0] == EOT.encode()
    for token in list(vocab.values())[1:]:
        assert b"<|" not in token and b"|>" not in token and b"endoftext" not in token
    counts = count_pretokens([path], [EOT], workers=1, progress=False)
    assert not any(b"endoftext" in w for w in counts)


def test_tie_goes_to_lexicographically_greater_pair(tmp_path: Path) -> None:
    path = tmp_path / "tie.txt"
    # "abcd" has the pairs ab, bc, cd once each; "cd" (the greatest) must be merged first.
    # Then (b, cd) and (a, b) tie; (b, cd) > (a, b).
    path.write_text("abcd", encoding="utf-8")
    _, merges = train_bpe(path, 256 + 3, [], workers=1)
    assert merges == [(b"c", b"d"), (b"b", b"cd"), (b"a", b"bcd")]
    # Comparison is of the byte strings, first element first: (b"ab", b"c") < (b"b", b"a").
    path.write_text("ab ba", encoding="utf-8")
    _, merges = train_bpe(path, 256 + 1, [], pattern=r"\S+", workers=1)
    assert merges == [(b"b", b"a")]


def test_frequency_beats_tie_break(tmp_path: Path) -> None:
    path = tmp_path / "freq.txt"
    path.write_text("ab ab ab zz", encoding="utf-8")
    _, merges = train_bpe(path, 256 + 1, [], pattern=r"\S+", workers=1)
    assert merges == [(b"a", b"b")]


def test_patterns_by_name_and_regex(tmp_path: Path) -> None:
    path = tmp_path / "numbers.txt"
    path.write_text(" ".join(str(12345678 * i) for i in range(1, 3000)), encoding="utf-8")
    vocab, _ = train_bpe(path, 800, [], pattern="cl100k", workers=1)
    assert max(len(t) for t in vocab.values() if t.isdigit()) <= 3
    vocab, _ = train_bpe(path, 800, [], pattern="gpt2", workers=1)
    assert max(len(t) for t in vocab.values() if t.strip().isdigit()) > 3
    vocab, merges = train_bpe(path, 300, [], pattern=r"\d", workers=1)
    assert merges == []
    assert len(vocab) == 256
    assert set(NAMED_PATTERNS) >= {"gpt2", "cl100k", "gpt4", "o200k"}
    with pytest.raises(ValueError):
        resolve_pattern("(unclosed")


def test_o200k_pattern_trains(tiny_corpus: Path) -> None:
    vocab, merges = train_bpe(tiny_corpus, 500, [EOT], pattern="o200k", workers=1)
    text = tiny_corpus.read_text(encoding="utf-8")
    assert merges == reference_bpe(text, 500, [EOT], "o200k")


def test_vocab_too_small(small_corpus: Path) -> None:
    with pytest.raises(ValueError):
        train_bpe(small_corpus, 256, [EOT])


def test_multiple_input_files(tmp_path: Path, wiki_texts: Callable) -> None:
    texts = wiki_texts(6)
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_text(EOT.join(texts[:3]), encoding="utf-8")
    b.write_text(EOT.join(texts[3:]), encoding="utf-8")
    both = tmp_path / "both.txt"
    both.write_text(EOT.join(texts[:3]) + EOT + EOT.join(texts[3:]), encoding="utf-8")
    assert train_bpe([a, b], 700, [EOT], workers=2) == train_bpe(both, 700, [EOT], workers=1)


def test_cli_train_and_encode(
    small_corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "tok"
    status = cli_main(
        [
            "train",
            "--input",
            str(small_corpus),
            "--vocab-size",
            "600",
            "--special-token",
            EOT,
            "--output",
            str(out),
            "--workers",
            "2",
        ]
    )
    assert status == 0
    for name in ["tokenizer.json", "vocab.json", "merges.txt", "tokenizer.tiktoken"]:
        assert (out / name).is_file()
    tok = Tokenizer.load(out)
    vocab, merges = train_bpe(small_corpus, 600, [EOT], workers=1)
    assert tok.vocab == vocab and tok.merges == merges
    sample = tmp_path / "sample.txt"
    sample.write_text("Hello world" + EOT + "Grüße", encoding="utf-8")
    capsys.readouterr()
    assert cli_main(["encode", "--tokenizer", str(out), "--input", str(sample)]) == 0
    printed = [int(x) for x in capsys.readouterr().out.split()]
    assert printed == tok.encode("Hello world" + EOT + "Grüße")
    assert tok.decode(printed) == "Hello world" + EOT + "Grüße"
