"""Attention kernels, masks and the KV cache of :class:`model.model.Attention`.

Which kernel runs (:func:`attend`):

* plain causal attention (no ALiBi, sliding window, soft-cap or document mask):
  ``scaled_dot_product_attention(is_causal=True)`` (FlashAttention / cuDNN on an H100);
* ALiBi, sliding windows, attention-logit soft-capping and document masks on CUDA:
  FlexAttention (``torch.nn.attention.flex_attention``), compiled, with grouped-query attention
  kept (``enable_gqa=True``). ALiBi and the soft-cap are a ``score_mod``; causality, the window
  and document boundaries are a block mask, so blocks wholly outside the mask are skipped;
* the same options on CPU (FlexAttention has no CPU backward and is unfused there), with
  ``attn_impl: sdpa``, and for KV-cache decoding past the prompt: an explicit dense mask
  (:func:`dense_mask`), the reference the FlexAttention path is tested against.

Block masks: the causal and sliding-window masks depend only on the sequence length and the
window, so they are built once per (length, window, device) and cached (:func:`static_block_mask`);
under ``torch.compile`` they are traced into the graph instead (no Python-side cache there).
Document masks depend on the batch, so :func:`flex_masks` builds them once per batch (one
block mask per distinct window, shared by all layers); build them outside the compiled model
(``Transformer.document_mask``) and pass them to the forward as ``attn_mask``.

:class:`KVCache` holds the keys and values of past tokens. Its position is a Python int
(dynamic: each step attends over the filled prefix) or a 0-d device tensor (static: each step
attends over the whole preallocated buffer with positions past the current one masked, so the
one-token step has fixed shapes and no host synchronisation, as CUDA-graph capture needs).

Imports only torch.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F

try:  # FlexAttention (torch >= 2.5)
    from torch.nn.attention.flex_attention import BlockMask, create_block_mask, flex_attention
except ImportError:  # pragma: no cover - old torch
    BlockMask = None  # type: ignore[assignment,misc]
    create_block_mask = None  # type: ignore[assignment]
    flex_attention = None  # type: ignore[assignment]

Position = Any  # int (dynamic KV cache or no cache) or a 0-d long tensor (static KV cache)

SDPA_BACKENDS = ("auto", "cudnn", "flash")


@contextlib.contextmanager
def sdpa_backend(name: str) -> Iterator[None]:
    """Within the block, put SDPA backend ``name`` first in PyTorch's priority order for the
    fused causal kernel (``"cudnn"``: cuDNN attention, ``"flash"``: FlashAttention-2,
    ``"auto"``: PyTorch's own order); the others stay enabled as fallbacks. A compiled model
    keeps the kernel chosen while it was traced, so enter this before its first call."""
    if name not in SDPA_BACKENDS:
        raise ValueError(f"sdpa backend must be one of {SDPA_BACKENDS}, not {name!r}")
    if name == "auto":
        yield
        return
    from torch.nn.attention import SDPBackend, sdpa_kernel

    first = SDPBackend.CUDNN_ATTENTION if name == "cudnn" else SDPBackend.FLASH_ATTENTION
    rest = [b for b in (SDPBackend.FLASH_ATTENTION, SDPBackend.CUDNN_ATTENTION,
                        SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH) if b != first]
    with sdpa_kernel([first, *rest], set_priority=True):
        yield


# The compiled FlexAttention kernel (torch 2.11 inductor) refuses head dims below 16; such
# (toy) models keep the dense path on CUDA. Eager FlexAttention on CPU has no such limit.
FLEX_MIN_HEAD_DIM = 16


class FlexMask(NamedTuple):
    """FlexAttention block masks for one forward pass.

    ``masks`` maps a sliding window (None: full causal) to its block mask, one entry for each
    window of the layers that go through FlexAttention. ``documents`` tells whether the masks
    hold document boundaries: then every layer uses them, otherwise plain causal layers keep
    the fused SDPA kernel.
    """

    masks: dict[int | None, Any]
    documents: bool


AttnMask = Any  # None (plain causal), a FlexMask, or a dense bool tensor [B, 1, T, T] (documents)


# ---- masks and score modifications -------------------------------------------------------------


def make_mask_mod(window: int | None = None, doc_ids: torch.Tensor | None = None) -> Callable:
    """FlexAttention ``mask_mod``: causal, within ``window`` tokens (the query included) when
    given, and within the same document when ``doc_ids`` ``[B, T]`` is given."""

    def mask_mod(b, h, q_idx, kv_idx):
        ok = q_idx >= kv_idx
        if window is not None:
            ok = ok & (q_idx - kv_idx < window)
        if doc_ids is not None:
            ok = ok & (doc_ids[b, q_idx] == doc_ids[b, kv_idx])
        return ok

    return mask_mod


def make_score_mod(alibi_slopes: torch.Tensor | None, softcap: float | None) -> Callable | None:
    """FlexAttention ``score_mod`` for the soft-cap ``cap * tanh(s / cap)`` followed by the ALiBi
    bias ``-slope[h] * (q - k)`` (the order of :func:`dense_mask` plus :func:`math_attention`);
    None when neither is on."""
    if alibi_slopes is None and softcap is None:
        return None

    def score_mod(score, b, h, q_idx, kv_idx):
        if softcap is not None:
            score = softcap * torch.tanh(score / softcap)
        if alibi_slopes is not None:
            score = score - alibi_slopes[h].float() * (q_idx - kv_idx).float()
        return score

    return score_mod


_STATIC_MASKS: dict[tuple, Any] = {}
_STATIC_MASKS_MAX = 32


def static_block_mask(T: int, window: int | None, device: torch.device) -> Any:
    """The causal (or sliding-window) block mask over ``T`` queries and keys, batch- and
    head-independent. Cached per (T, window, device) in eager mode; built afresh (traced into
    the graph) under ``torch.compile``."""
    if torch.compiler.is_compiling():
        return create_block_mask(make_mask_mod(window), None, None, T, T, device=device)
    key = (T, window, str(device))
    mask = _STATIC_MASKS.get(key)
    if mask is None:
        if len(_STATIC_MASKS) >= _STATIC_MASKS_MAX:
            _STATIC_MASKS.pop(next(iter(_STATIC_MASKS)))
        mask = create_block_mask(make_mask_mod(window), None, None, T, T, device=device)
        _STATIC_MASKS[key] = mask
    return mask


def flex_masks(T: int, windows: set[int | None], doc_ids: torch.Tensor | None,
               device: torch.device) -> FlexMask:
    """A :class:`FlexMask` with one block mask per window in ``windows``: document-masked when
    ``doc_ids`` ``[B, T]`` is given (built now, for this batch), otherwise the cached static
    masks."""
    if create_block_mask is None:  # pragma: no cover - old torch
        raise RuntimeError("FlexAttention needs torch >= 2.5; set attn_impl: sdpa")
    if doc_ids is None:
        return FlexMask({w: static_block_mask(T, w, device) for w in windows}, False)
    B = doc_ids.shape[0]
    return FlexMask({w: create_block_mask(make_mask_mod(w, doc_ids), B, None, T, T,
                                          device=device) for w in windows}, True)


def dense_mask(T: int, Tk: int, start: Position, window: int | None,
               alibi_slopes: torch.Tensor | None, doc_mask: torch.Tensor | None,
               device: torch.device) -> torch.Tensor:
    """Explicit mask for queries at positions ``start..start+T-1`` over keys ``0..Tk-1``: a bool
    tensor (True = attend) or, with ALiBi, a float bias with ``-inf`` where masked.
    ``doc_mask`` is a dense document mask ``[B, 1, T, T]``. ``start`` may be a 0-d tensor."""
    q_pos = start + torch.arange(T, device=device)[:, None]
    k_pos = torch.arange(Tk, device=device)[None, :]
    dist = q_pos - k_pos  # >= 0 for the past
    allowed = dist >= 0
    if window is not None:
        allowed = allowed & (dist < window)
    if doc_mask is not None:
        allowed = allowed & doc_mask
    if alibi_slopes is None:
        return allowed
    bias = -alibi_slopes.float()[:, None, None] * dist.float()  # [H, T, Tk]
    return torch.where(allowed, bias.unsqueeze(0), float("-inf"))  # [1 or B, H, T, Tk]


def dense_document_mask(doc_ids: torch.Tensor) -> torch.Tensor:
    """Dense bool document mask ``[B, 1, T, T]``: causal and within the same document."""
    T = doc_ids.shape[1]
    causal = torch.ones(T, T, dtype=torch.bool, device=doc_ids.device).tril()
    return ((doc_ids[:, :, None] == doc_ids[:, None, :]) & causal)[:, None]


def math_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor,
                   softcap: float | None) -> torch.Tensor:
    """Attention written out (float32 scores), with the tanh soft-cap on the scores; ``mask``
    bool (True = attend) or an additive float bias."""
    rep = q.shape[1] // k.shape[1]
    if rep > 1:
        k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
    scores = (q.float() @ k.float().transpose(-2, -1)) / math.sqrt(q.shape[-1])
    if softcap is not None:
        scores = softcap * torch.tanh(scores / softcap)
    if mask.dtype == torch.bool:
        scores = scores.masked_fill(~mask, float("-inf"))
    else:
        scores = scores + mask
    return (scores.softmax(dim=-1) @ v.float()).type_as(q)


# ---- kernels --------------------------------------------------------------------------------------

_compiled_flex: Callable | None = None


def flex_attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, block_mask: Any,
                score_mod: Callable | None) -> torch.Tensor:
    """FlexAttention over ``q`` ``[B, H, T, D]`` and ``k``/``v`` ``[B, KV, Tk, D]``.

    On CUDA outside ``torch.compile`` the call goes through one module-level compiled
    ``flex_attention`` (the fused kernel; eager FlexAttention materialises the scores); inside a
    compiled model it is traced with the rest. On CPU it runs eagerly (forward only)."""
    gqa = q.shape[1] != k.shape[1]
    fn = flex_attention
    if q.is_cuda and not torch.compiler.is_compiling():
        global _compiled_flex
        if _compiled_flex is None:
            _compiled_flex = torch.compile(flex_attention, dynamic=False)
        fn = _compiled_flex
    return fn(q, k, v, score_mod=score_mod, block_mask=block_mask, enable_gqa=gqa)


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, start: Position,
           mask: AttnMask, window: int | None, alibi_slopes: torch.Tensor | None,
           softcap: float | None, dropout_p: float = 0.0) -> torch.Tensor:
    """Causal attention of queries ``q`` ``[B, H, T, D]`` at positions ``start..start+T-1`` over
    keys/values ``[B, KV, Tk, D]`` at positions ``0..Tk-1`` (grouped-query when ``KV < H``).

    ``mask``: None, a :class:`FlexMask` (FlexAttention, needs ``start == 0`` and ``Tk == T``) or
    a dense bool document mask ``[B, 1, T, T]``. ``window``, ``alibi_slopes`` (``[H]``) and
    ``softcap`` are the layer's options. ``dropout_p`` (training only) drops attention
    probabilities; it needs the plain causal path (GPT-2 style models). Returns ``[B, H, T, D]``.
    """
    T = q.shape[2]
    gqa = q.shape[1] != k.shape[1]
    plain = window is None and alibi_slopes is None and softcap is None
    dynamic = isinstance(start, int)
    if dropout_p and not (plain and mask is None or isinstance(mask, FlexMask)
                          and plain and not mask.documents):
        raise ValueError("attention dropout needs plain causal attention (no ALiBi, window, "
                         "soft-cap or document mask)")
    if isinstance(mask, FlexMask):
        if plain and not mask.documents:
            return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=gqa,
                                                  dropout_p=dropout_p)
        return flex_attend(q, k, v, mask.masks[window], make_score_mod(alibi_slopes, softcap))
    if mask is None and plain and dynamic:
        if start == 0:
            return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=gqa,
                                                  dropout_p=dropout_p)
        if T == 1:  # one new token sees the whole (filled) cache
            return F.scaled_dot_product_attention(q, k, v, enable_gqa=gqa)
    explicit = dense_mask(T, k.shape[2], start, window, alibi_slopes, mask, q.device)
    if softcap is not None:
        return math_attention(q, k, v, explicit, softcap)
    if explicit.dtype != torch.bool:
        explicit = explicit.to(q.dtype)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=explicit, enable_gqa=gqa)


# ---- positions and the KV cache -----------------------------------------------------------------


def rows_at(table: torch.Tensor, start: Position, n: int) -> torch.Tensor:
    """Rows ``start..start+n-1`` of ``table`` (a slice for an int ``start``, a gather for a 0-d
    tensor, which keeps the step free of host synchronisation)."""
    if isinstance(start, int):
        return table[start:start + n]
    return table.index_select(0, start + torch.arange(n, device=table.device))


class KVCache:
    """Keys and values of past tokens for incremental decoding.

    One buffer per layer of shape ``[B, n_kv_heads, max_len, head_dim]``: only the key/value
    heads are stored (with grouped-query attention the query heads share them), after the
    position encoding (rotary keys are cached rotated). ``pos`` is the number of tokens cached;
    :meth:`Transformer.forward` advances it after a pass over new tokens.

    ``pos`` is an int (dynamic: :meth:`update` returns the filled prefix) or, after
    :meth:`make_static`, a 0-d long tensor on the cache's device (static: :meth:`update` writes
    with ``index_copy_`` and returns the whole buffers; attention masks the positions past
    ``pos``). Static steps have fixed shapes and never read ``pos`` on the host, so a one-token
    step can be captured in a CUDA graph; the caller keeps ``pos + T <= max_len``.
    """

    def __init__(self, cfg: Any, batch_size: int, max_len: int | None = None,
                 device: torch.device | str | None = None,
                 dtype: torch.dtype = torch.float32) -> None:
        self.max_len = cfg.max_seq_len if max_len is None else max_len
        shape = (batch_size, cfg.n_kv_heads, self.max_len, cfg.head_dim)
        self.k = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(cfg.n_layers)]
        self.v = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(cfg.n_layers)]
        self.pos: Position = 0

    @property
    def static(self) -> bool:
        """Whether ``pos`` is a device tensor (fixed-shape steps over the whole buffer)."""
        return isinstance(self.pos, torch.Tensor)

    def make_static(self, pos: torch.Tensor | None = None) -> torch.Tensor:
        """Switch to static steps; ``pos`` (0-d long tensor, kept and updated in place) or a new
        one takes the current position. Returns the position tensor."""
        if pos is None:
            pos = torch.zeros((), dtype=torch.long, device=self.k[0].device)
        pos.fill_(int(self.pos) if not self.static else self.pos)
        self.pos = pos
        return pos

    def update(self, layer_id: int, k: torch.Tensor,
               v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store ``k``, ``v`` ``[B, KV, T, D]`` at positions ``pos..pos+T-1`` of layer
        ``layer_id``; return the cached keys and values (dynamic: ``[B, KV, pos+T, D]``;
        static: the whole ``[B, KV, max_len, D]`` buffers)."""
        kb, vb = self.k[layer_id], self.v[layer_id]
        if self.static:
            idx = self.pos + torch.arange(k.shape[2], device=kb.device)
            kb.index_copy_(2, idx, k.to(kb.dtype))
            vb.index_copy_(2, idx, v.to(vb.dtype))
            return kb, vb
        end = self.pos + k.shape[2]
        if end > self.max_len:
            raise ValueError(f"KV cache full: {end} tokens > max_len {self.max_len}")
        kb[:, :, self.pos:end] = k
        vb[:, :, self.pos:end] = v
        return kb[:, :, :end], vb[:, :, :end]

    def advance(self, n: int) -> None:
        """Move the position ``n`` tokens on (in place for a static cache)."""
        if self.static:
            self.pos.add_(n)
        else:
            self.pos += n

    def reorder(self, index: torch.Tensor) -> None:
        """Keep batch rows ``index`` (``[B']``, repeats allowed), e.g. the surviving beams of a
        beam search; the batch size becomes ``B'``."""
        self.k = [t.index_select(0, index) for t in self.k]
        self.v = [t.index_select(0, index) for t in self.v]
