"""The native (C) BPE merge loop against the pure-Python one, and the fallback without it."""

from __future__ import annotations

import gzip
import json
import random
from pathlib import Path

import pytest

import tokenizer.merges as merges_mod
from tokenizer import train_bpe
from tokenizer.merges import bpe_merges, native_available
from tokenizer.pretokenize import count_text

EOT = "<|endoftext|>"

# fails without the extension unless REFINERY_ALLOW_PURE_PYTHON=1 (tests/conftest.py)
needs_native = pytest.mark.native("_bpe")


@pytest.fixture(scope="module")
def real_text(shared_data: Path) -> str:
    """About 600 KB of real text: Wikipedia articles, Moby Dick, multilingual sentences."""
    docs = []
    path = shared_data / "reference" / "wiki_ref.jsonl.gz"
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        for i, line in enumerate(handle):
            if i >= 40:
                break
            docs.append(json.loads(line)["text"][:8000])
    path = shared_data / "reference" / "moby_dick_chapters_stdlib.jsonl.gz"
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        for i, line in enumerate(handle):
            if i >= 12:
                break
            docs.append(json.loads(line)["text"])
    tsv = shared_data / "langid" / "tatoeba_long_cld2.tsv"
    lines = tsv.read_text(encoding="utf-8").splitlines()
    docs.append("\n".join(line.split("\t")[3] for line in lines[1:]))
    return EOT.join(docs)


def byte_counts(text: str, pattern: str) -> dict[bytes, int]:
    """Pre-token counts of `text` as {bytes: count}, as the trainer feeds the merge loop."""
    return {w.encode("utf-8"): n for w, n in count_text(text, [EOT], pattern).items()}


@needs_native
@pytest.mark.parametrize("pattern", ["gpt2", "cl100k", "o200k"])
def test_native_and_python_merges_identical_on_real_text(real_text: str, pattern: str) -> None:
    counts = byte_counts(real_text, pattern)
    native = bpe_merges(counts, 3000, progress=False, native=True)
    python = bpe_merges(counts, 3000, progress=False, native=False)
    assert len(native[1]) == 3000
    assert native == python


@needs_native
@pytest.mark.parametrize("seed", range(6))
def test_native_and_python_agree_on_ties_until_exhausted(seed: int) -> None:
    """Tiny alphabets and equal counts: many ties, tokens with equal bytes, runs like 'aaaa'."""
    rng = random.Random(seed)
    alphabet = b"ab" if seed % 2 else b"abc"
    counts: dict[bytes, int] = {}
    for _ in range(300):
        word = bytes(rng.choice(alphabet) for _ in range(rng.randint(1, 12)))
        counts[word] = counts.get(word, 0) + rng.choice([1, 1, 2, 3])
    native = bpe_merges(counts, 10_000, progress=False, native=True)
    python = bpe_merges(counts, 10_000, progress=False, native=False)
    assert native == python
    assert len(native[1]) < 10_000  # ran until no pair was left


@needs_native
def test_native_progress_callback(real_text: str) -> None:
    counts = byte_counts(real_text[:100_000], "gpt2")
    assert bpe_merges(counts, 1500, progress=True) == bpe_merges(
        counts, 1500, progress=False, native=False
    )


def test_training_without_the_extension(
    tmp_path: Path, real_text: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "corpus.txt"
    path.write_text(real_text[:150_000], encoding="utf-8")
    default = train_bpe(path, 800, [EOT], workers=1)
    monkeypatch.setattr(merges_mod, "_native", None)
    assert not native_available()
    with pytest.raises(RuntimeError):
        bpe_merges({b"ab": 1}, 1, progress=False, native=True)
    fallback = train_bpe(path, 800, [EOT], workers=1)
    assert fallback == default
    vocab, merges = fallback
    assert len(vocab) == 800 and len(merges) == 800 - 257
