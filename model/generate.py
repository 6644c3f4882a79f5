"""Sampling from a trained :class:`~model.model.Transformer`, with or without a KV cache.

:func:`generate` continues batches of token-id prompts (greedy at ``temperature == 0``,
otherwise temperature / top-k / nucleus sampling, or beam search with ``num_beams > 1``);
:func:`generate_text` does the same for text with any tokenizer that has ``encode``/``decode``
(``tokenizer.Tokenizer``), and :func:`load_checkpoint` rebuilds a model from a train run's
checkpoint (which stores its ``model_config``). ``pipeline sample`` is the command-line front
end.

Decoding modes (``decode=``): ``eager`` runs one model call per new token over a KV cache that
grows with the sequence; ``static``, ``cuda_graph`` and ``compiled`` use :class:`StaticDecoder`:
a preallocated cache of fixed shape and the position as a device tensor, so the one-token step
has fixed shapes and never synchronises with the host; ``cuda_graph`` replays that step from a
captured CUDA graph, ``compiled`` also compiles it with ``torch.compile`` first (batch-1
decoding is otherwise bound by kernel-launch overhead).

:func:`beam_search` keeps the ``num_beams`` most likely continuations (sum of token
log-probabilities); finished hypotheses are ranked by ``sum / length ** length_penalty``
(GNMT / Hugging Face style, length = new tokens). The beams share the prompt's KV cache, which
is reordered as beams are selected.

Prompts of different lengths are run in groups of equal length, so no padding is needed and
each group is exactly what a batch of one would compute. Imports only torch (the GPU machine
has torch, numpy and pyarrow).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple, Protocol

import torch

from model.model import KVCache, ModelConfig, Transformer

DECODE_MODES = ("eager", "static", "cuda_graph", "compiled")


class TextCodec(Protocol):
    """What :func:`generate_text` needs from a tokenizer."""

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text``."""
        ...

    def decode(self, ids: Sequence[int]) -> str:
        """Text of ``ids``."""
        ...


def filter_logits(logits: torch.Tensor, top_k: int | None = None,
                  top_p: float | None = None) -> torch.Tensor:
    """Set to ``-inf`` the logits ``[B, V]`` outside the ``top_k`` largest and outside the
    smallest set of most likely tokens whose probability reaches ``top_p`` (nucleus); the most
    likely token is always kept."""
    if top_k is not None and 0 < top_k < logits.shape[-1]:
        kth = logits.topk(top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        probs = sorted_logits.softmax(dim=-1)
        before = probs.cumsum(dim=-1) - probs  # probability mass of the more likely tokens
        drop_sorted = before >= top_p
        drop_sorted[:, 0] = False
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def _next_token(logits: torch.Tensor, temperature: float, top_k: int | None,
                top_p: float | None, generator: torch.Generator | None) -> torch.Tensor:
    """Pick one token per row of ``logits`` ``[B, V]``; returns ``[B, 1]``."""
    if temperature == 0:
        return logits.argmax(dim=-1, keepdim=True)
    probs = filter_logits(logits.float() / temperature, top_k, top_p).softmax(dim=-1)
    return torch.multinomial(probs, 1, generator=generator)


@torch.no_grad()
def _generate_group(model: Transformer, idx: torch.Tensor, max_new_tokens: int,
                    temperature: float, top_k: int | None, top_p: float | None,
                    generator: torch.Generator | None, eos_id: int | None,
                    use_cache: bool) -> torch.Tensor:
    """New tokens ``[B, <= max_new_tokens]`` for prompts ``idx`` ``[B, T]`` of equal length."""
    B, T = idx.shape
    cache = None
    if use_cache:
        dtype = next(model.parameters()).dtype
        cache = KVCache(model.config, B, T + max_new_tokens, device=idx.device, dtype=dtype)
    seq = idx
    new: list[torch.Tensor] = []
    done = torch.zeros(B, dtype=torch.bool, device=idx.device)
    step_input = idx
    for _ in range(max_new_tokens):
        logits = model(step_input, cache=cache) if use_cache else model(seq)
        tok = _next_token(logits[:, -1].float(), temperature, top_k, top_p, generator)
        if eos_id is not None:
            tok = tok.masked_fill(done[:, None], eos_id)
            done = done | (tok[:, 0] == eos_id)
        new.append(tok)
        seq = torch.cat([seq, tok], dim=1)
        step_input = tok
        if eos_id is not None and bool(done.all()):
            break
    return torch.cat(new, dim=1) if new else idx.new_zeros(B, 0)


class StaticDecoder:
    """Decoding with a static KV cache, optionally compiled and replayed from a CUDA graph.

    Holds a :class:`KVCache` of ``max_len`` positions (default ``max_seq_len``) for
    ``batch_size`` sequences whose position is a 0-d device tensor, the current input token
    ``[B, 1]`` and, with ``cuda_graph`` (default: on CUDA), a CUDA graph of the one-token step
    (model call, cache write, position advance) captured once; with ``compile`` the step is
    compiled by ``torch.compile`` (fullgraph) before capture. The prompt is prefilled by an
    ordinary model call into the same buffers. Build once and call :meth:`generate` many times
    (the graph and compiled code are reused); the model's weights must not be replaced.
    """

    def __init__(self, model: Transformer, batch_size: int, max_len: int | None = None, *,
                 compile: bool = False, cuda_graph: bool | None = None) -> None:
        param = next(model.parameters())
        self.model = model.eval()
        self.batch_size = batch_size
        self.max_len = model.config.max_seq_len if max_len is None else max_len
        if self.max_len > model.config.max_seq_len:
            raise ValueError(f"max_len {self.max_len} > max_seq_len {model.config.max_seq_len}")
        self.cache = KVCache(model.config, batch_size, self.max_len, device=param.device,
                             dtype=param.dtype)
        self.pos = self.cache.make_static()
        self.tok = torch.zeros(batch_size, 1, dtype=torch.long, device=param.device)
        self._step = self._eager_step
        if compile:
            self._step = torch.compile(self._eager_step, fullgraph=True, dynamic=False)
        if cuda_graph is None:
            cuda_graph = param.device.type == "cuda"
        if cuda_graph and param.device.type != "cuda":
            raise ValueError("cuda_graph needs the model on a CUDA device")
        self.graph: Any = None
        self.logits: torch.Tensor | None = None
        if cuda_graph:
            self._capture()

    def _eager_step(self) -> torch.Tensor:
        return self.model(self.tok, cache=self.cache)[:, -1].float()

    @torch.no_grad()
    def _capture(self) -> None:
        """Warm up (and compile) on a side stream, then capture one step in a CUDA graph."""
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(3):
                self._step()
        torch.cuda.current_stream().wait_stream(stream)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.logits = self._step()
        self.pos.zero_()  # the warm-up advanced it; capture itself runs nothing

    @torch.no_grad()
    def step(self) -> torch.Tensor:
        """Logits ``[B, vocab]`` (float32) after the tokens in ``self.tok`` at position
        ``self.pos``; writes their keys and values and advances the position."""
        if self.graph is not None:
            self.graph.replay()
            return self.logits
        return self._step()

    @torch.no_grad()
    def generate(self, idx: torch.Tensor, max_new_tokens: int, temperature: float = 0.0,
                 top_k: int | None = None, top_p: float | None = None,
                 generator: torch.Generator | None = None,
                 eos_id: int | None = None) -> torch.Tensor:
        """New tokens ``[B, max_new_tokens]`` for prompts ``idx`` ``[B, T]``, chosen as
        :func:`generate` chooses them; rows that produced ``eos_id`` repeat it afterwards."""
        B, T = idx.shape
        if B != self.batch_size:
            raise ValueError(f"batch of {B} prompts, decoder built for {self.batch_size}")
        if T + max_new_tokens > self.max_len:
            raise ValueError(f"prompt of {T} tokens + {max_new_tokens} new > max_len "
                             f"{self.max_len} of the decoder")
        self.cache.pos = 0  # prefill over the same buffers with the ordinary kernels
        logits = self.model(idx, cache=self.cache)[:, -1].float()
        self.cache.make_static(self.pos)
        out = torch.empty(B, max_new_tokens, dtype=torch.long, device=idx.device)
        done = torch.zeros(B, dtype=torch.bool, device=idx.device)
        for i in range(max_new_tokens):
            tok = _next_token(logits, temperature, top_k, top_p, generator)
            if eos_id is not None:
                tok = tok.masked_fill(done[:, None], eos_id)
                done = done | (tok[:, 0] == eos_id)
            out[:, i] = tok[:, 0]
            if i + 1 < max_new_tokens:
                self.tok.copy_(tok)
                logits = self.step()
        return out


def _check_sampling(temperature: float, top_p: float | None) -> None:
    if temperature < 0:
        raise ValueError("temperature must be >= 0")
    if top_p is not None and not 0 < top_p <= 1:
        raise ValueError("top_p must be in (0, 1]")


@torch.no_grad()
def generate(model: Transformer, prompts: Sequence[Sequence[int]], max_new_tokens: int = 64,
             temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None,
             seed: int | None = None, eos_id: int | None = None,
             use_cache: bool = True, decode: str = "eager", num_beams: int = 1,
             length_penalty: float = 1.0) -> list[list[int]]:
    """Continue each prompt (a list of token ids) by up to ``max_new_tokens`` tokens.

    Greedy when ``temperature == 0``; otherwise sampled from ``softmax(logits / temperature)``
    restricted by ``top_k`` / ``top_p``, with a generator seeded by ``seed`` (reproducible).
    A continuation stops after ``eos_id`` (included). Returns the new tokens of each prompt,
    in prompt order. ``use_cache=False`` recomputes the whole sequence at every step (the
    reference the cache is tested against). ``decode`` picks the decoding mode (module
    docstring; a :class:`StaticDecoder` is built per group of equal-length prompts, so for
    repeated calls build one yourself). ``num_beams > 1`` runs :func:`beam_search` per prompt
    and returns its best hypothesis (deterministic: temperature, top-k/p and seed unused).
    """
    _check_sampling(temperature, top_p)
    if decode not in DECODE_MODES:
        raise ValueError(f"decode must be one of {DECODE_MODES}, not {decode!r}")
    if num_beams > 1:
        return [beam_search(model, p, num_beams, max_new_tokens, length_penalty, eos_id,
                            use_cache)[0].tokens for p in prompts]
    limit = model.config.max_seq_len
    for p in prompts:
        if not p:
            raise ValueError("empty prompt")
        if len(p) + max_new_tokens > limit:
            raise ValueError(f"prompt of {len(p)} tokens + {max_new_tokens} new > "
                             f"max_seq_len {limit}")
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    generator = None
    if seed is not None:
        generator = torch.Generator(device=device)
        generator.manual_seed(seed)
    out: list[list[int]] = [[] for _ in prompts]
    groups: dict[int, list[int]] = {}
    for i, p in enumerate(prompts):
        groups.setdefault(len(p), []).append(i)
    try:
        for length in sorted(groups):
            rows = groups[length]
            idx = torch.tensor([list(prompts[i]) for i in rows], dtype=torch.long, device=device)
            if decode == "eager" or not use_cache:
                new = _generate_group(model, idx, max_new_tokens, temperature, top_k, top_p,
                                      generator, eos_id, use_cache).tolist()
            else:
                decoder = StaticDecoder(model, len(rows), length + max_new_tokens,
                                        compile=decode == "compiled",
                                        cuda_graph=decode in ("cuda_graph", "compiled"))
                new = decoder.generate(idx, max_new_tokens, temperature, top_k, top_p,
                                       generator, eos_id).tolist()
            for i, toks in zip(rows, new, strict=True):
                if eos_id is not None and eos_id in toks:
                    toks = toks[: toks.index(eos_id) + 1]
                out[i] = toks
    finally:
        model.train(was_training)
    return out


class BeamHypothesis(NamedTuple):
    """One finished beam: its new tokens (``eos_id`` included if it ended so), the sum of their
    log-probabilities and the ranking score ``logprob / len(tokens) ** length_penalty``."""

    tokens: list[int]
    logprob: float
    score: float


@torch.no_grad()
def beam_search(model: Transformer, prompt: Sequence[int], num_beams: int = 4,
                max_new_tokens: int = 64, length_penalty: float = 1.0,
                eos_id: int | None = None, use_cache: bool = True) -> list[BeamHypothesis]:
    """Beam search continuation of ``prompt``; returns up to ``num_beams`` hypotheses, best
    first.

    Each step extends every live beam by every token and keeps the ``num_beams`` extensions of
    highest log-probability sum among those not ending in ``eos_id``; an extension ending in
    ``eos_id`` is a finished hypothesis, and so is every live beam after ``max_new_tokens``.
    Finished hypotheses are ranked by ``logprob / length ** length_penalty`` (length = new
    tokens; ``length_penalty > 0`` favours longer ones). The search stops early once no live
    beam can still beat the ``num_beams``-th finished one (a log-probability sum only falls
    as tokens are added, which bounds its best reachable score). With ``num_beams`` at least
    the number of live prefixes (``(V-1)^(n-1)`` with ``eos_id``, ``V^(n-1)`` without, for
    vocabulary ``V`` and ``n = max_new_tokens``) nothing is pruned and the result is the exact
    best of all sequences. The beams share the prompt's KV cache (one prefill); the cache rows
    are reordered to follow the surviving beams.
    """
    if num_beams < 1 or max_new_tokens < 1:
        raise ValueError("num_beams and max_new_tokens must be >= 1")
    if not prompt:
        raise ValueError("empty prompt")
    if len(prompt) + max_new_tokens > model.config.max_seq_len:
        raise ValueError(f"prompt of {len(prompt)} tokens + {max_new_tokens} new > "
                         f"max_seq_len {model.config.max_seq_len}")
    was_training = model.training
    model.eval()
    param = next(model.parameters())
    device = param.device
    idx = torch.tensor([list(prompt)], dtype=torch.long, device=device)
    cache = (KVCache(model.config, 1, len(prompt) + max_new_tokens, device=device,
                     dtype=param.dtype) if use_cache else None)
    seqs = idx.new_zeros(1, 0)  # new tokens of the live beams
    sums = torch.zeros(1, dtype=torch.float32, device=device)
    finished: list[BeamHypothesis] = []
    alpha = length_penalty

    def add(tokens: list[int], logprob: float) -> None:
        finished.append(BeamHypothesis(tokens, logprob, logprob / len(tokens) ** alpha))
        finished.sort(key=lambda h: -h.score)
        del finished[num_beams:]

    step_input = idx
    try:
        for step in range(max_new_tokens):
            if cache is not None:
                logits = model(step_input, cache=cache)[:, -1]
            else:
                logits = model(torch.cat([idx.expand(seqs.shape[0], -1), seqs], dim=1))[:, -1]
            cand = sums[:, None] + torch.log_softmax(logits.float(), dim=-1)  # [beams, V]
            length = step + 1
            if eos_id is not None:
                for toks, lp in zip(seqs.tolist(), cand[:, eos_id].tolist(), strict=True):
                    add(toks + [eos_id], lp)
                cand[:, eos_id] = float("-inf")
            flat = cand.view(-1)
            k = min(num_beams, int(torch.isfinite(flat).sum()))
            if k == 0:
                break
            top = flat.topk(k)
            beam = top.indices // cand.shape[1]
            tok = top.indices % cand.shape[1]
            seqs = torch.cat([seqs[beam], tok[:, None]], dim=1)
            sums = top.values
            if length == max_new_tokens:
                for toks, lp in zip(seqs.tolist(), sums.tolist(), strict=True):
                    add(toks, lp)
                break
            if cache is not None:
                cache.reorder(beam)
            step_input = tok[:, None]
            if len(finished) == num_beams:
                # Best reachable score of a live beam: its sum (sums only fall) over the
                # longest (alpha >= 0) or shortest (alpha < 0) length still possible.
                best_len = max_new_tokens if alpha >= 0 else length + 1
                if float(sums.max()) / best_len ** alpha <= finished[-1].score:
                    break
    finally:
        model.train(was_training)
    return finished


def generate_text(model: Transformer, tokenizer: TextCodec, prompts: Sequence[str],
                  max_new_tokens: int = 64, temperature: float = 1.0,
                  top_k: int | None = None, top_p: float | None = None,
                  seed: int | None = None, eos_id: int | None = None,
                  decode: str = "eager", num_beams: int = 1,
                  length_penalty: float = 1.0) -> list[str]:
    """Text continuations of ``prompts`` (see :func:`generate`); ``eos_id`` is not decoded."""
    ids = generate(model, [tokenizer.encode(p) for p in prompts], max_new_tokens, temperature,
                   top_k, top_p, seed, eos_id, decode=decode, num_beams=num_beams,
                   length_penalty=length_penalty)
    if eos_id is not None:
        ids = [t[:-1] if t and t[-1] == eos_id else t for t in ids]
    return [tokenizer.decode(t) for t in ids]


def resolve_checkpoint(path: str | Path) -> Path:
    """The ``state.pt`` that ``path`` names: the file itself, a ``step_*`` folder, a run's
    ``checkpoints`` folder or the run's out_dir (both via ``checkpoints/latest``)."""
    p = Path(path)
    if p.is_file():
        return p
    for ckpt_dir in (p / "checkpoints", p):
        latest = ckpt_dir / "latest"
        if latest.is_file():
            state = ckpt_dir / latest.read_text().strip() / "state.pt"
            if state.is_file():
                return state
    if (p / "state.pt").is_file():
        return p / "state.pt"
    raise FileNotFoundError(f"no checkpoint (state.pt) found at {p}")


def run_config(checkpoint: Path) -> dict[str, Any]:
    """The train run's ``config.json`` next to ``out_dir/checkpoints/step_*/state.pt``
    (empty if absent)."""
    path = checkpoint.parent.parent.parent / "config.json"
    if path.is_file():
        return json.loads(path.read_text(encoding="utf-8"))
    return {}


def tokenizer_dir_of(checkpoint: Path) -> str | None:
    """The tokenizer directory recorded as ``data.tokenizer`` in the run's config, if any."""
    tok = (run_config(checkpoint).get("data") or {}).get("tokenizer")
    return str(tok) if tok else None


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu",
                    dtype: torch.dtype = torch.float32) -> Transformer:
    """Rebuild the model saved by ``model.train`` at ``path`` (see :func:`resolve_checkpoint`),
    in eval mode on ``device``."""
    state = torch.load(resolve_checkpoint(path), map_location="cpu", weights_only=True)
    if "model_config" not in state:
        raise ValueError(f"{path}: checkpoint has no model_config")
    model = Transformer(ModelConfig.from_dict(state["model_config"]))
    model.load_state_dict(state["model"])
    return model.to(device=device, dtype=dtype).eval()
