"""Reader for the packed token stream (`refinery-tokens-v1`, docs/token-stream-format.md).

A stream directory holds ``manifest.json`` and Arrow IPC files whose ``tokens`` list column is
one document per row. Each file is memory-mapped; the list column's value buffer *is* the
packed token stream and its offsets are the document boundaries, so nothing is copied until a
window is read.

:class:`WindowSampler` draws random fixed-length windows (``seq_len + 1`` tokens: inputs and
targets shifted by one) deterministically from a seed; its state is a small JSON-able dict so
a checkpoint can resume the exact same sequence of batches. :func:`eval_windows` gives the
fixed, non-overlapping windows used for validation.

Only numpy and pyarrow are imported here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

FORMAT = "refinery-tokens-v1"
_DTYPES = {"uint16": np.uint16, "uint32": np.uint32}


@dataclass
class Windows:
    """A batch of windows as numpy arrays.

    ``inputs`` and ``targets`` are ``[n, seq_len]`` int64 (targets = inputs shifted by one
    token). ``doc_ids`` (``[n, seq_len]`` int32, or None) numbers the documents of each input
    window from 0 in order, so position i may attend to j only if ``doc_ids[i] == doc_ids[j]``.
    """

    inputs: np.ndarray
    targets: np.ndarray
    doc_ids: np.ndarray | None = None


class TokenStream:
    """A memory-mapped packed token stream: one global token array split over file segments."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        manifest_path = self.path / "manifest.json"
        if not manifest_path.exists():
            raise FileNotFoundError(f"no manifest.json in token stream {self.path}")
        self.manifest: dict[str, Any] = json.loads(manifest_path.read_text())
        if self.manifest.get("format") != FORMAT:
            raise ValueError(f"{manifest_path}: format {self.manifest.get('format')!r}, "
                             f"expected {FORMAT!r}")
        dtype_name = self.manifest.get("dtype", "uint16")
        if dtype_name not in _DTYPES:
            raise ValueError(f"{manifest_path}: unsupported dtype {dtype_name!r}")
        self.dtype = np.dtype(_DTYPES[dtype_name])
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
        """Tokens ``[start, start + length)`` of the global stream, as an int64 copy."""
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
        """Document number of each position in ``[start, start + length)``, from 0."""
        pos = np.arange(start, start + length, dtype=np.int64)
        d = np.searchsorted(self.doc_starts, pos, side="right")
        return (d - d[0]).astype(np.int32)

    def windows(self, starts: np.ndarray, seq_len: int, with_doc_ids: bool = False) -> Windows:
        """The windows of ``seq_len + 1`` tokens beginning at each of ``starts``."""
        toks = np.stack([self.read(int(s), seq_len + 1) for s in starts])
        docs = None
        if with_doc_ids:
            docs = np.stack([self.doc_ids(int(s), seq_len) for s in starts])
        return Windows(toks[:, :-1].copy(), toks[:, 1:].copy(), docs)


class WindowSampler:
    """Uniformly random window starts over a stream, reproducible and checkpointable.

    All data-parallel ranks hold the same sampler and draw the whole global batch each step;
    each rank keeps its own slice, so a run's batches do not depend on how it is split over
    ranks and micro-batches, and the state to checkpoint is the same on every rank.
    """

    def __init__(self, stream: TokenStream, seq_len: int, seed: int,
                 with_doc_ids: bool = False) -> None:
        if stream.num_tokens < seq_len + 1:
            raise ValueError(f"stream {stream.path} has {stream.num_tokens} tokens, fewer than "
                             f"one window of {seq_len + 1}")
        self.stream = stream
        self.seq_len = seq_len
        self.seed = seed
        self.with_doc_ids = with_doc_ids
        self.rng = np.random.Generator(np.random.PCG64(seed))
        self.windows_drawn = 0

    def draw_starts(self, n: int) -> np.ndarray:
        """The next ``n`` window start positions (advances the state)."""
        high = self.stream.num_tokens - (self.seq_len + 1) + 1
        self.windows_drawn += n
        return self.rng.integers(0, high, size=n, dtype=np.int64)

    def sample(self, n: int) -> Windows:
        """The next ``n`` random windows."""
        return self.stream.windows(self.draw_starts(n), self.seq_len, self.with_doc_ids)

    def state_dict(self) -> dict[str, Any]:
        """JSON-able state: seed, generator state and windows drawn so far."""
        return {"seed": self.seed, "seq_len": self.seq_len,
                "windows_drawn": self.windows_drawn, "rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a state from :meth:`state_dict`."""
        if state["seq_len"] != self.seq_len:
            raise ValueError(f"sampler state is for seq_len {state['seq_len']}, not {self.seq_len}")
        self.seed = state["seed"]
        self.windows_drawn = state["windows_drawn"]
        self.rng.bit_generator.state = state["rng"]


def eval_windows(stream: TokenStream, seq_len: int, n: int) -> np.ndarray:
    """Start positions of the first ``n`` non-overlapping windows (fewer if the stream is short)."""
    available = (stream.num_tokens - 1) // seq_len
    return np.arange(min(n, available), dtype=np.int64) * seq_len
