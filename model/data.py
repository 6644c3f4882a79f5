"""Training windows over the packed token stream (`refinery-tokens-v1`).

The stream itself (manifest, memory-mapped Arrow parts) is read by
:class:`tokenizer.token_stream.TokenStream`, the one module that defines the format.
:func:`read_windows` cuts fixed-length windows (``seq_len + 1`` tokens: inputs and targets
shifted by one) out of it. :class:`WindowSampler` draws random window starts deterministically
from a seed; its state is a small JSON-able dict so a checkpoint can resume the exact same
sequence of batches. :func:`eval_windows` gives the fixed, non-overlapping windows used for
validation.

Only numpy (and, through the stream reader, pyarrow) is imported here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from tokenizer.token_stream import TokenStream


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


def read_windows(stream: TokenStream, starts: np.ndarray, seq_len: int,
                 with_doc_ids: bool = False) -> Windows:
    """The windows of ``seq_len + 1`` tokens of ``stream`` beginning at each of ``starts``.

    With ``with_doc_ids`` the result also numbers the documents of each input window.
    """
    toks = np.stack([stream.read(int(s), seq_len + 1) for s in starts])
    docs = None
    if with_doc_ids:
        docs = np.stack([stream.doc_ids(int(s), seq_len) for s in starts])
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
        return read_windows(self.stream, self.draw_starts(n), self.seq_len, self.with_doc_ids)

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
