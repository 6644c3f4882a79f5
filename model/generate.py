"""Sampling from a trained :class:`~model.model.Transformer`, with or without a KV cache.

:func:`generate` continues batches of token-id prompts (greedy at ``temperature == 0``,
otherwise temperature / top-k / nucleus sampling); :func:`generate_text` does the same for
text with any tokenizer that has ``encode``/``decode`` (``tokenizer.Tokenizer``), and
:func:`load_checkpoint` rebuilds a model from a train run's checkpoint (which stores its
``model_config``). ``pipeline sample`` is the command-line front end.

Prompts of different lengths are run in groups of equal length, so no padding is needed and
each group is exactly what a batch of one would compute. Imports only torch (the GPU machine
has torch, numpy and pyarrow).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import torch

from model.model import KVCache, ModelConfig, Transformer


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


@torch.no_grad()
def generate(model: Transformer, prompts: Sequence[Sequence[int]], max_new_tokens: int = 64,
             temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None,
             seed: int | None = None, eos_id: int | None = None,
             use_cache: bool = True) -> list[list[int]]:
    """Continue each prompt (a list of token ids) by up to ``max_new_tokens`` tokens.

    Greedy when ``temperature == 0``; otherwise sampled from ``softmax(logits / temperature)``
    restricted by ``top_k`` / ``top_p``, with a generator seeded by ``seed`` (reproducible).
    A continuation stops after ``eos_id`` (included). Returns the new tokens of each prompt,
    in prompt order. ``use_cache=False`` recomputes the whole sequence at every step (the
    reference the cache is tested against).
    """
    if temperature < 0:
        raise ValueError("temperature must be >= 0")
    if top_p is not None and not 0 < top_p <= 1:
        raise ValueError("top_p must be in (0, 1]")
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
            new = _generate_group(model, idx, max_new_tokens, temperature, top_k, top_p,
                                  generator, eos_id, use_cache).tolist()
            for i, toks in zip(rows, new, strict=True):
                if eos_id is not None and eos_id in toks:
                    toks = toks[: toks.index(eos_id) + 1]
                out[i] = toks
    finally:
        model.train(was_training)
    return out


def generate_text(model: Transformer, tokenizer: TextCodec, prompts: Sequence[str],
                  max_new_tokens: int = 64, temperature: float = 1.0,
                  top_k: int | None = None, top_p: float | None = None,
                  seed: int | None = None, eos_id: int | None = None) -> list[str]:
    """Text continuations of ``prompts`` (see :func:`generate`); ``eos_id`` is not decoded."""
    ids = generate(model, [tokenizer.encode(p) for p in prompts], max_new_tokens, temperature,
                   top_k, top_p, seed, eos_id)
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
