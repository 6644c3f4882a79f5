"""Writer for the packed token stream (`refinery-tokens-v1`, docs/token-stream-format.md).

Each part is an Arrow IPC file with one `tokens: list<uint16|uint32>` row per document (its
ids followed by the EOS id), written through a temporary file and renamed, so a part either
exists whole or not at all. `write_manifest` lists the parts in stream order.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

FORMAT = "refinery-tokens-v1"
MANIFEST = "manifest.json"
_NUMPY = {"uint16": np.uint16, "uint32": np.uint32}


@dataclass(frozen=True)
class PartInfo:
    """One written part: its file name (relative to the stream dir) and its counts."""

    path: str
    num_tokens: int
    num_docs: int


def dtype_for_vocab(vocab_size: int) -> str:
    """`uint16` when every id (0 .. vocab_size-1) fits in 16 bits, else `uint32`."""
    return "uint16" if vocab_size <= 1 << 16 else "uint32"


def _batch(arrays: list[np.ndarray], dtype: str, eos_id: int) -> pa.RecordBatch:
    """One record batch: a row per array, each followed by `eos_id`."""
    limit = np.iinfo(_NUMPY[dtype]).max
    eos = np.array([eos_id], dtype=np.int64)
    pieces: list[np.ndarray] = []
    for ids in arrays:
        if len(ids) and (int(ids.min()) < 0 or int(ids.max()) > limit):
            raise ValueError(f"token id out of range for {dtype}")
        pieces.append(ids)
        pieces.append(eos)
    if eos_id < 0 or eos_id > limit:
        raise ValueError(f"EOS id {eos_id} out of range for {dtype}")
    values = np.concatenate(pieces).astype(_NUMPY[dtype]) if pieces else np.zeros(0, _NUMPY[dtype])
    offsets = np.zeros(len(arrays) + 1, dtype=np.int32)
    np.cumsum([len(a) + 1 for a in arrays], out=offsets[1:])
    array = pa.ListArray.from_arrays(pa.array(offsets), pa.array(values))
    return pa.RecordBatch.from_arrays([array], names=["tokens"])


def write_token_stream(
    docs_ids: Iterable[Sequence[int] | np.ndarray],
    out_dir: str | os.PathLike,
    part_name: str,
    dtype: str,
    eos_id: int,
    batch_tokens: int = 1 << 22,
) -> PartInfo:
    """Write one part: every document's ids followed by `eos_id`, one row per document.

    `docs_ids` (lists of ints or integer numpy arrays) is consumed lazily; rows are flushed
    in record batches of about `batch_tokens` tokens, so memory stays bounded. `dtype` is
    "uint16" or "uint32"; an id that does not fit raises ValueError (and leaves no part
    behind). Returns the PartInfo.
    """
    if dtype not in _NUMPY:
        raise ValueError(f"dtype must be uint16 or uint32, not {dtype!r}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    final = out / part_name
    tmp = out / f".{part_name}.tmp-{os.getpid()}"
    schema = pa.schema([pa.field("tokens", pa.list_(pa.from_numpy_dtype(_NUMPY[dtype])))])
    num_tokens = num_docs = pending_tokens = 0
    pending: list[np.ndarray] = []
    try:
        with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_file(sink, schema) as writer:
            for ids in docs_ids:
                array = ids if isinstance(ids, np.ndarray) else np.asarray(ids, dtype=np.int64)
                pending.append(array)
                pending_tokens += len(array) + 1
                num_docs += 1
                if pending_tokens >= batch_tokens:
                    writer.write_batch(_batch(pending, dtype, eos_id))
                    num_tokens += pending_tokens
                    pending, pending_tokens = [], 0
            if pending or num_docs == 0:
                writer.write_batch(_batch(pending, dtype, eos_id))
                num_tokens += pending_tokens
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)
    return PartInfo(part_name, num_tokens, num_docs)


def write_manifest(
    out_dir: str | os.PathLike,
    parts: Sequence[PartInfo],
    dtype: str,
    eos_id: int,
    vocab_size: int,
    tokenizer_hash: str,
) -> dict[str, Any]:
    """Write `manifest.json` (atomically) listing `parts` in stream order; returns it."""
    manifest = {
        "format": FORMAT,
        "dtype": dtype,
        "eos_id": eos_id,
        "vocab_size": vocab_size,
        "tokenizer_hash": tokenizer_hash,
        "files": [
            {"path": p.path, "num_tokens": p.num_tokens, "num_docs": p.num_docs} for p in parts
        ],
        "total_tokens": sum(p.num_tokens for p in parts),
        "total_docs": sum(p.num_docs for p in parts),
    }
    path = Path(out_dir) / MANIFEST
    tmp = path.with_name(f".{MANIFEST}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    os.replace(tmp, path)
    return manifest


def read_part_offsets(path: str | os.PathLike) -> np.ndarray:
    """Row boundaries of a part as one int64 array (len = rows + 1), across its batches."""
    with pa.memory_map(str(path), "r") as source:
        reader = pa.ipc.open_file(source)
        bounds = [np.zeros(1, dtype=np.int64)]
        total = 0
        for b in range(reader.num_record_batches):
            col = reader.get_batch(b).column(0)
            off = col.offsets.to_numpy().astype(np.int64)
            bounds.append(off[1:] - off[0] + total)
            total += int(off[-1] - off[0])
    return np.concatenate(bounds)
