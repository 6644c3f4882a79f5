"""Training windows over the packed token stream (`refinery-tokens-v1`).

The stream itself (manifest, memory-mapped Arrow parts) is read by
:class:`tokenizer.token_stream.TokenStream`, the one module that defines the format.
:func:`read_windows` cuts fixed-length windows (``seq_len + 1`` tokens: inputs and targets
shifted by one) out of it. :class:`EpochSampler` (the trainer's default) visits the
stream's non-overlapping windows in a new seeded permutation each epoch, so at a repeat
factor r every window is seen floor(r) or ceil(r) times; :class:`WindowSampler` (kept for
runs that ask for ``sampler: random_windows``) draws window starts uniformly with
replacement. Both keep their state in a small JSON-able dict, so a checkpoint resumes the
exact same sequence of batches. :func:`eval_plan` covers an evaluation stream completely
with windows (every target token scored once) and :func:`eval_subset` picks a fixed seeded
subset of them; neither depends on batch size or world size.

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

    kind = "random_windows"

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
        """JSON-able state: kind, seed, generator state and windows drawn so far."""
        return {"kind": self.kind, "seed": self.seed, "seq_len": self.seq_len,
                "windows_drawn": self.windows_drawn, "rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a state from :meth:`state_dict`."""
        if state.get("kind", self.kind) != self.kind:  # states before "kind" were this one's
            raise ValueError(f"checkpoint's sampler is {state['kind']!r}, this run's is "
                             f"{self.kind!r}; set data.sampler to match it")
        if state["seq_len"] != self.seq_len:
            raise ValueError(f"sampler state is for seq_len {state['seq_len']}, not {self.seq_len}")
        self.seed = state["seed"]
        self.windows_drawn = state["windows_drawn"]
        self.rng.bit_generator.state = state["rng"]


def eval_windows(stream: TokenStream, seq_len: int, n: int) -> np.ndarray:
    """Start positions of the first ``n`` non-overlapping windows (fewer if the stream is short)."""
    available = (stream.num_tokens - 1) // seq_len
    return np.arange(min(n, available), dtype=np.int64) * seq_len


class EpochSampler:
    """Seeded epochs over the stream's non-overlapping windows, reproducible and checkpointable.

    Window k holds tokens ``[k*seq_len, (k+1)*seq_len]`` (inputs and shifted targets), for
    ``k < n = (num_tokens - 1) // seq_len``; the last ``< seq_len`` tokens are never a
    target. Epoch e visits all n windows in the order ``permutation(n)`` of a generator
    seeded with ``(seed, e)``; batches run straight across epoch boundaries. After W windows
    every window has been seen floor(W/n) or ceil(W/n) times. The state is the count of
    windows drawn, so resuming needs no generator state. As with :class:`WindowSampler`,
    every data-parallel rank draws the whole global batch and keeps its own slice.
    """

    kind = "epochs"

    def __init__(self, stream: TokenStream, seq_len: int, seed: int,
                 with_doc_ids: bool = False) -> None:
        self.num_windows = (stream.num_tokens - 1) // seq_len
        if self.num_windows < 1:
            raise ValueError(f"stream {stream.path} has {stream.num_tokens} tokens, fewer than "
                             f"one window of {seq_len + 1}")
        self.stream = stream
        self.seq_len = seq_len
        self.seed = seed
        self.with_doc_ids = with_doc_ids
        self.windows_drawn = 0
        self._epoch = -1
        self._order = np.zeros(0, dtype=np.int64)

    def _permutation(self, epoch: int) -> np.ndarray:
        if epoch != self._epoch:
            rng = np.random.Generator(np.random.PCG64([self.seed, epoch]))
            self._order, self._epoch = rng.permutation(self.num_windows), epoch
        return self._order

    def draw_starts(self, n: int) -> np.ndarray:
        """The next ``n`` window start positions (advances the state)."""
        out = np.empty(n, dtype=np.int64)
        filled = 0
        while filled < n:
            epoch, pos = divmod(self.windows_drawn, self.num_windows)
            take = min(n - filled, self.num_windows - pos)
            out[filled:filled + take] = self._permutation(epoch)[pos:pos + take]
            filled += take
            self.windows_drawn += take
        return out * self.seq_len

    def sample(self, n: int) -> Windows:
        """The next ``n`` windows."""
        return read_windows(self.stream, self.draw_starts(n), self.seq_len, self.with_doc_ids)

    @property
    def epochs(self) -> float:
        """Windows drawn so far divided by windows per epoch."""
        return self.windows_drawn / self.num_windows

    def state_dict(self) -> dict[str, Any]:
        """JSON-able state: kind, seed, window length, windows per epoch and drawn so far."""
        return {"kind": self.kind, "seed": self.seed, "seq_len": self.seq_len,
                "num_windows": self.num_windows, "windows_drawn": self.windows_drawn}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a state from :meth:`state_dict`; ValueError if it belongs to another
        sampler kind, window length or stream length."""
        if state.get("kind") != self.kind:
            raise ValueError(f"checkpoint's sampler is {state.get('kind', 'random_windows')!r}, "
                             f"this run's is {self.kind!r}; set data.sampler to match it")
        if state["seq_len"] != self.seq_len or state["num_windows"] != self.num_windows:
            raise ValueError(f"sampler state is for seq_len {state['seq_len']} over "
                             f"{state['num_windows']} windows, not {self.seq_len} over "
                             f"{self.num_windows}: the train stream or seq_len changed")
        self.seed = state["seed"]
        self.windows_drawn = state["windows_drawn"]


SAMPLERS = {"epochs": EpochSampler, "random_windows": WindowSampler}


def make_sampler(kind: str, stream: TokenStream, seq_len: int, seed: int,
                 with_doc_ids: bool = False) -> EpochSampler | WindowSampler:
    """The training sampler named ``kind`` (``epochs`` or ``random_windows``)."""
    if kind not in SAMPLERS:
        raise ValueError(f"data.sampler: unknown sampler {kind!r} (epochs, random_windows)")
    return SAMPLERS[kind](stream, seq_len, seed, with_doc_ids=with_doc_ids)


@dataclass
class EvalPlan:
    """Windows covering an evaluation stream: every token after the first is a target once.

    ``starts`` ``[n]`` are window starts; targets of window i at positions ``j >= first[i]``
    are scored (earlier ones are context already scored by the window before).
    ``doc_starts`` are the stream's document starts (``num_docs`` of them), so the document
    of every scored target is known without reading the stream.
    """

    starts: np.ndarray
    first: np.ndarray
    seq_len: int
    doc_starts: np.ndarray
    num_tokens: int

    def __len__(self) -> int:
        return len(self.starts)

    @property
    def num_docs(self) -> int:
        """Documents in the stream."""
        return len(self.doc_starts)

    def weights(self, idx: np.ndarray) -> np.ndarray:
        """``[len(idx), seq_len]`` float32: 1 where window ``idx[i]``'s target j is scored."""
        return (np.arange(self.seq_len)[None, :] >= self.first[idx][:, None]).astype(np.float32)

    def target_docs(self, idx: np.ndarray) -> np.ndarray:
        """``[len(idx), seq_len]`` int64: the document index of each target of the windows."""
        pos = self.starts[idx][:, None] + 1 + np.arange(self.seq_len)[None, :]
        return np.searchsorted(self.doc_starts, pos, side="right").astype(np.int64) - 1

    def window_tokens(self) -> np.ndarray:
        """Scored targets per window (``[n]`` int64)."""
        return self.seq_len - self.first

    def doc_tokens(self) -> np.ndarray:
        """Scored targets per document over all windows (``[num_docs]`` int64): its length,
        less one for the first document (token 0 is never a target)."""
        counts = np.diff(np.append(self.doc_starts, self.num_tokens)).astype(np.int64)
        counts[0] -= 1
        return counts


def eval_plan(stream: TokenStream, seq_len: int) -> EvalPlan:
    """Cover ``stream`` with non-overlapping windows plus, if tokens remain, one window
    ending at the stream's end that scores only the remaining targets."""
    n = stream.num_tokens
    if n < seq_len + 1:
        raise ValueError(f"eval stream {stream.path} has {n} tokens, fewer than one window "
                         f"of {seq_len + 1}")
    full = (n - 1) // seq_len
    starts = np.arange(full, dtype=np.int64) * seq_len
    first = np.zeros(full, dtype=np.int64)
    tail = n - 1 - full * seq_len
    if tail:
        starts = np.append(starts, n - 1 - seq_len)
        first = np.append(first, seq_len - tail)
    return EvalPlan(starts, first, seq_len, np.asarray(stream.doc_starts, dtype=np.int64), n)


def eval_subset(plan: EvalPlan, n: int, seed: int = 0) -> np.ndarray:
    """Indices (sorted) of ``n`` windows of ``plan`` drawn without replacement by ``seed``
    (all windows if ``n`` is at least their number); the same for every run and world size."""
    if n >= len(plan):
        return np.arange(len(plan), dtype=np.int64)
    rng = np.random.Generator(np.random.PCG64(seed))
    return np.sort(rng.choice(len(plan), size=n, replace=False)).astype(np.int64)
