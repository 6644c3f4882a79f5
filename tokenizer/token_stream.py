"""The packed token stream (`refinery-tokens-v1`, docs/token-stream-format.md): writer and reader.

A stream directory holds `manifest.json` and Arrow IPC files with one `tokens: list<uint16|uint32>`
row per document (its ids followed by the EOS id). The writer (`write_token_stream`, one part
at a time, through a temporary file and a rename so a part either exists whole or not at all;
`write_manifest` to list the parts in stream order) is used by the pipeline's tokenize step;
the reader (`TokenStream`) by `model/`.

Only numpy and pyarrow are imported here: `model/` imports this module on a GPU machine that
has nothing else.
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
DTYPES: dict[str, type[np.unsignedinteger]] = {"uint16": np.uint16, "uint32": np.uint32}


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
    limit = np.iinfo(DTYPES[dtype]).max
    eos = np.array([eos_id], dtype=np.int64)
    pieces: list[np.ndarray] = []
    for ids in arrays:
        if len(ids) and (int(ids.min()) < 0 or int(ids.max()) > limit):
            raise ValueError(f"token id out of range for {dtype}")
        pieces.append(ids)
        pieces.append(eos)
    if eos_id < 0 or eos_id > limit:
        raise ValueError(f"EOS id {eos_id} out of range for {dtype}")
    values = np.concatenate(pieces).astype(DTYPES[dtype]) if pieces else np.zeros(0, DTYPES[dtype])
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
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be uint16 or uint32, not {dtype!r}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    final = out / part_name
    tmp = out / f".{part_name}.tmp-{os.getpid()}"
    schema = pa.schema([pa.field("tokens", pa.list_(pa.from_numpy_dtype(DTYPES[dtype])))])
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


class TokenStream:
    """A memory-mapped packed token stream: one global token array split over file segments.

    Each part is memory-mapped; its list column's value buffer *is* the packed stream and its
    offsets are the document boundaries, so nothing is copied until `read` is called.
    `path` is the stream directory; raises FileNotFoundError without a manifest and
    ValueError when the manifest's format, dtype or token counts do not match the files.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        manifest_path = self.path / MANIFEST
        if not manifest_path.exists():
            raise FileNotFoundError(f"no {MANIFEST} in token stream {self.path}")
        self.manifest: dict[str, Any] = json.loads(manifest_path.read_text())
        if self.manifest.get("format") != FORMAT:
            raise ValueError(f"{manifest_path}: format {self.manifest.get('format')!r}, "
                             f"expected {FORMAT!r}")
        dtype_name = self.manifest.get("dtype", "uint16")
        if dtype_name not in DTYPES:
            raise ValueError(f"{manifest_path}: unsupported dtype {dtype_name!r}")
        self.dtype = np.dtype(DTYPES[dtype_name])
        self.eos_id: int | None = self.manifest.get("eos_id")
        self.vocab_size: int | None = self.manifest.get("vocab_size")

        self._segments: list[np.ndarray] = []  # token arrays (views into the mapped files)
        doc_starts: list[np.ndarray] = []
        self._maps: list[Any] = []  # keep the memory maps alive
        pos = 0
        for entry in self.manifest.get("files", []):
            file_tokens = 0
            mm = pa.memory_map(str(self.path / entry["path"]), "r")
            self._maps.append(mm)
            reader = pa.ipc.open_file(mm)
            for b in range(reader.num_record_batches):
                batch = reader.get_batch(b)
                col = batch.column(batch.schema.get_field_index("tokens"))
                if len(col) == 0:
                    continue
                if not (pa.types.is_list(col.type) or pa.types.is_large_list(col.type)):
                    raise ValueError(f"{entry['path']}: 'tokens' must be a list column")
                offsets = col.offsets.to_numpy().astype(np.int64)
                values = col.values.to_numpy(zero_copy_only=True)
                if values.dtype != self.dtype:
                    raise ValueError(f"{entry['path']}: values are {values.dtype}, manifest "
                                     f"says {self.dtype}")
                seg = values[offsets[0]:offsets[-1]]
                if len(seg) == 0:
                    continue
                self._segments.append(seg)
                doc_starts.append(offsets[:-1] - offsets[0] + pos)
                pos += len(seg)
                file_tokens += len(seg)
            expected = entry.get("num_tokens")
            if expected is not None and expected != file_tokens:
                raise ValueError(f"{entry['path']}: manifest says {expected} tokens, "
                                 f"file holds {file_tokens}")
        self.num_tokens = pos
        self.seg_starts = np.cumsum([0] + [len(s) for s in self._segments], dtype=np.int64)
        starts = np.concatenate(doc_starts) if doc_starts else np.zeros(0, np.int64)
        # Rows can be empty (zero-length documents): keep unique starts only.
        self.doc_starts = np.unique(starts)
        self.num_docs = int(len(self.doc_starts))

    def __len__(self) -> int:
        return self.num_tokens

    def read(self, start: int, length: int) -> np.ndarray:
        """Tokens `[start, start + length)` of the global stream, as an int64 copy.

        Raises IndexError when the range runs outside the stream.
        """
        if start < 0 or start + length > self.num_tokens:
            raise IndexError(f"window [{start}, {start + length}) outside stream of "
                             f"{self.num_tokens} tokens")
        out = np.empty(length, dtype=np.int64)
        seg = int(np.searchsorted(self.seg_starts, start, side="right") - 1)
        filled = 0
        while filled < length:
            s = self._segments[seg]
            lo = start + filled - int(self.seg_starts[seg])
            n = min(length - filled, len(s) - lo)
            out[filled:filled + n] = s[lo:lo + n]
            filled += n
            seg += 1
        return out

    def doc_ids(self, start: int, length: int) -> np.ndarray:
        """Document number (int32, from 0) of each position in `[start, start + length)`."""
        pos = np.arange(start, start + length, dtype=np.int64)
        d = np.searchsorted(self.doc_starts, pos, side="right")
        return (d - d[0]).astype(np.int32)
