"""Byte-level BPE tokenizer: trainer, encoder, standard file formats, packed token streams.

`Tokenizer` and `train_bpe` are loaded on first use (PEP 562): importing a light submodule
such as `tokenizer.token_stream` (numpy and pyarrow only, what `model/` needs on a GPU
machine) must not pull in `regex`, `tiktoken` or `tqdm`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tokenizer.encoder import Tokenizer
    from tokenizer.trainer import train_bpe

__all__ = ["Tokenizer", "train_bpe"]

_LAZY = {"Tokenizer": "tokenizer.encoder", "train_bpe": "tokenizer.trainer"}


def __getattr__(name: str) -> Any:
    """Import `Tokenizer` or `train_bpe` from its submodule when first asked for."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])
