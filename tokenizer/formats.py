"""Reading and writing tokenizer files: Hugging Face tokenizer.json, GPT-2 vocab.json and
merges.txt, tiktoken ranks, and refinery_tokenizer.json (pattern and special tokens).

Everything here reads and writes plain data (`TokenizerData`: vocabulary, merges, special
tokens, pattern); `tokenizer.encoder.Tokenizer` builds itself from it (`Tokenizer.load`) and
hands it over to be saved (`Tokenizer.save`), so this module never needs the encoder.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import regex

from tokenizer.byte_unicode import decode_token, encode_token
from tokenizer.patterns import GPT2_PATTERN, resolve_pattern

HF_FILE = "tokenizer.json"
VOCAB_FILE = "vocab.json"
MERGES_FILE = "merges.txt"
TIKTOKEN_FILE = "tokenizer.tiktoken"
CONFIG_FILE = "refinery_tokenizer.json"


@dataclass(frozen=True)
class TokenizerData:
    """A tokenizer as plain data: what its files hold.

    `vocab` maps id to token bytes (special tokens included); `merges` lists byte-string
    pairs by priority; `special_tokens` maps each special token's text to its id; `pattern`
    is the pre-tokenizer name (gpt2, cl100k/gpt4, o200k) or a regex.
    """

    vocab: dict[int, bytes]
    merges: list[tuple[bytes, bytes]]
    special_tokens: dict[str, int]
    pattern: str


def _write_atomic(path: Path, text: str) -> None:
    """Write `text` to `path` through a temporary file and a rename."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def read_gpt2_vocab(path: str | os.PathLike) -> dict[int, bytes]:
    """Read a GPT-2 `vocab.json` ({byte-mapped token: id}); returns {id: token bytes}."""
    raw = json.loads(Path(path).read_text(encoding="utf-8"))
    vocab: dict[int, bytes] = {}
    for text, idx in raw.items():
        try:
            token = decode_token(text)
        except KeyError:
            token = text.encode("utf-8")
        vocab[int(idx)] = token
    return vocab


def read_gpt2_merges(path: str | os.PathLike) -> list[tuple[bytes, bytes]]:
    """Read a GPT-2 `merges.txt` (optional `#version` line, then `left right` per line)."""
    merges: list[tuple[bytes, bytes]] = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.startswith("#version"):
            continue
        left, right = line.split(" ")
        merges.append((decode_token(left), decode_token(right)))
    return merges


def read_tiktoken_ranks(path: str | os.PathLike) -> dict[bytes, int]:
    """Read a tiktoken ranks file (`base64(token) rank` per line); returns {token: rank}."""
    ranks: dict[bytes, int] = {}
    for line in Path(path).read_bytes().splitlines():
        if line.strip():
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    return ranks


def regular_ids(data: TokenizerData) -> list[int]:
    """Ids of the tokenizer's non-special tokens, ascending."""
    special = set(data.special_tokens.values())
    return [i for i in sorted(data.vocab) if i not in special]


def gpt2_vocab_json(data: TokenizerData) -> dict[str, int]:
    """The GPT-2 `vocab.json` mapping (byte-mapped token to id; special tokens verbatim)."""
    out = {encode_token(data.vocab[i]): i for i in regular_ids(data)}
    for text, idx in data.special_tokens.items():
        out[text] = idx
    return out


def gpt2_merges_txt(data: TokenizerData) -> str:
    """The GPT-2 `merges.txt` text."""
    lines = ["#version: 0.2"]
    lines += [f"{encode_token(a)} {encode_token(b)}" for a, b in data.merges]
    return "\n".join(lines) + "\n"


def tiktoken_ranks_text(data: TokenizerData) -> str:
    """tiktoken ranks text: `base64(token) id` per non-special token (ranks are the ids)."""
    lines = [f"{base64.b64encode(data.vocab[i]).decode('ascii')} {i}" for i in regular_ids(data)]
    return "\n".join(lines) + "\n"


def onig_pattern(pattern: str) -> str:
    """Rewrite a `regex` pattern for Hugging Face's Oniguruma engine.

    Oniguruma reads `{m,n}+` as "one or more times {m,n}", not as a possessive interval, so
    cl100k's `\\p{N}{1,3}+` would swallow whole numbers there. An interval at the end of an
    alternative never backtracks, so dropping the `+` keeps the same splits.
    """
    return regex.sub(r"(?<!\\)(\{\d+(?:,\d*)?\})\+", r"\1", pattern)


def hf_tokenizer_json(data: TokenizerData) -> dict[str, Any]:
    """The Hugging Face `tokenizers` description of `data` (byte-level BPE, no normalizer)."""
    byte_level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False}
    pattern_regex = resolve_pattern(data.pattern)
    if pattern_regex == GPT2_PATTERN:
        pre_tokenizer: dict[str, Any] = {**byte_level, "use_regex": True}
    else:
        pre_tokenizer = {
            "type": "Sequence",
            "pretokenizers": [
                {
                    "type": "Split",
                    "pattern": {"Regex": onig_pattern(pattern_regex)},
                    "behavior": "Isolated",
                    "invert": False,
                },
                {**byte_level, "use_regex": False},
            ],
        }
    added = [
        {
            "id": idx,
            "content": text,
            "single_word": False,
            "lstrip": False,
            "rstrip": False,
            "normalized": False,
            "special": True,
        }
        for text, idx in sorted(data.special_tokens.items(), key=lambda kv: kv[1])
    ]
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": None,
        "pre_tokenizer": pre_tokenizer,
        "post_processor": None,
        "decoder": {**byte_level, "use_regex": True},
        "model": {
            "type": "BPE",
            "dropout": None,
            "unk_token": None,
            "continuing_subword_prefix": None,
            "end_of_word_suffix": None,
            "fuse_unk": False,
            "byte_fallback": False,
            "ignore_merges": False,
            "vocab": _hf_model_vocab(data),
            "merges": [[encode_token(a), encode_token(b)] for a, b in data.merges],
        },
    }


def _hf_model_vocab(data: TokenizerData) -> dict[str, int]:
    """The BPE model's vocab for tokenizer.json: byte-mapped tokens plus the special tokens.

    Hugging Face gives an added token the id its content has in the model vocab, else the
    next free id, ignoring the id written in `added_tokens`; so the specials must be here.
    """
    vocab = {encode_token(data.vocab[i]): i for i in regular_ids(data)}
    for text, idx in data.special_tokens.items():
        if vocab.setdefault(text, idx) != idx:
            raise ValueError(f"special token {text!r} collides with a regular token's string")
    return vocab


def save_tokenizer_data(data: TokenizerData, directory: str | os.PathLike) -> None:
    """Write all of `data`'s formats into `directory` (created if missing), each atomically."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    config = {
        "format": "refinery-bpe-v1",
        "pattern": data.pattern,
        "special_tokens": data.special_tokens,
    }
    _write_atomic(out / HF_FILE, json.dumps(hf_tokenizer_json(data), ensure_ascii=False))
    _write_atomic(out / VOCAB_FILE, json.dumps(gpt2_vocab_json(data), ensure_ascii=False))
    _write_atomic(out / MERGES_FILE, gpt2_merges_txt(data))
    _write_atomic(out / TIKTOKEN_FILE, tiktoken_ranks_text(data))
    _write_atomic(out / CONFIG_FILE, json.dumps(config, ensure_ascii=False, indent=2))


def load_tokenizer_data(directory: str | os.PathLike) -> TokenizerData:
    """Read what `save_tokenizer_data` wrote: vocab.json, merges.txt and the config.

    The returned vocabulary holds the special tokens at the ids the config gives them.
    """
    base = Path(directory)
    config = json.loads((base / CONFIG_FILE).read_text(encoding="utf-8"))
    vocab = read_gpt2_vocab(base / VOCAB_FILE)
    specials: dict[str, int] = config["special_tokens"]
    for text, idx in specials.items():
        vocab[int(idx)] = text.encode("utf-8")
    merges = read_gpt2_merges(base / MERGES_FILE)
    return TokenizerData(vocab, merges, specials, config["pattern"])


def tokenizer_hash(directory: str | os.PathLike) -> str:
    """sha256 hex digest of the directory's `tokenizer.json` (identifies the tokenizer)."""
    return hashlib.sha256((Path(directory) / HF_FILE).read_bytes()).hexdigest()
