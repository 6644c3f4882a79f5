"""The whole transformer in one file (nanoGPT style): config, layers, MoE, loss, FLOP count.

Architecture: token embedding -> N x [pre-norm RMSNorm -> grouped-query attention with rotary
position embeddings -> residual; pre-norm RMSNorm -> SwiGLU feed-forward or mixture of
experts -> residual] -> RMSNorm -> LM head (optionally tied to the embedding). No biases.

Attention goes through ``torch.nn.functional.scaled_dot_product_attention`` (FlashAttention /
cuDNN kernels on an H100) for plain causal attention, and on CUDA through compiled
FlexAttention for ALiBi, sliding windows, soft-capping and document masks (a token attends only
to earlier tokens of its own document); kernels, masks and the KV cache are in
``model/attention.py``.

Mixture of experts (``model/moe.py``): token-choice top-k or expert-choice routing in float32,
shared and fine-grained experts, optional capacity factor with token dropping, the
Switch/GShard load-balancing loss or auxiliary-loss-free bias balancing (DeepSeek-V3), softmax
or sigmoid router scores, router z-loss, grouped-GEMM experts.

Architecture knobs (defaults give the architecture above, through the same kernels):

* ``norm_placement``: ``pre`` (default), ``post`` (``x = norm(x + f(x))``, original
  Transformer), ``sandwich`` (``x = x + norm_out(f(norm_in(x)))``, CogView / Gemma 2) or
  ``deepnorm`` (DeepNet, Wang et al. 2022: ``x = norm(alpha * x + f(x))`` with the
  value/output/feed-forward weights initialised Xavier-normal with gain ``beta``; decoder-only
  constants ``alpha = (2N)^(1/4)``, ``beta = (8N)^(-1/4)``, see :func:`deepnorm_constants`);
  ``norm_type``: ``rmsnorm`` (default) or ``layernorm`` (mean-centred, no bias).
* ``pos_encoding``: ``rope`` (default, ``rope_theta``), ``alibi`` (Press et al. 2022, per-head
  linear distance penalty, :func:`alibi_slopes`), ``learned`` (absolute position embedding
  table), ``sinusoidal`` (fixed, Vaswani et al. 2017) or ``none`` (NoPE).
* Stability: ``output_z_loss_coef`` (PaLM z-loss ``mean(logsumexp(logits)^2)`` on the output
  logits), ``qk_norm``, ``attn_logit_softcap`` / ``final_logit_softcap`` (Gemma 2:
  ``cap * tanh(x / cap)`` on attention scores / output logits).
* ``sliding_window``: attention limited to the last ``sliding_window`` tokens (the token itself
  included) on the layers ``sliding_window_layers`` (default: all), full attention elsewhere.
* ``fp32_residual`` (default true): the residual stream between blocks is float32 under bf16
  autocast (parameters are float32, so the embedding output is); ``false`` casts it to bf16
  after the embedding under bf16 autocast (fp16 autocast keeps float32), halving the bytes
  every norm and residual kernel moves (Megatron-LM's default; 4.8% less time per 350M block
  on an H100). Its loss cost was not measurable at 125M: +0.005 nats on held-out Wikipedia
  after 13M web tokens, 95% interval -0.012 to +0.022 over six seed pairs
  (``benchmarks/RESULTS.md``). Without autocast it changes nothing. Under the trainer's
  FSDP2 (bf16 parameters in forward) the embedding output, and so the stream, is bf16 with
  either setting.
* GPT-2 style (the ``gpt2-124m`` preset, 124,439,808 parameters like GPT-2 small): ``bias``
  (biases in every linear layer and LayerNorm), ``mlp: gelu`` (``w2(gelu_tanh(x W1))``
  instead of SwiGLU), ``dropout`` (embeddings, attention probabilities, both residual
  branches; training only), with ``pos_encoding: learned`` and ``norm_type: layernorm``.

With the defaults, attention is ``scaled_dot_product_attention(is_causal=True)``; ALiBi,
sliding windows, attention-logit soft-capping and document masks use FlexAttention (a
``score_mod`` and a block mask) on CUDA with ``attn_impl: flex`` (the default), and an explicit
dense mask on CPU, with ``attn_impl: sdpa`` and for KV-cache steps past the prompt.

Generation uses :class:`KVCache` (keys and values of the ``n_kv_heads`` heads only, after the
position encoding); see ``model/generate.py``.

Only torch is imported here (the GPU machine has torch, numpy and pyarrow).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from model.attention import (
    FLEX_MIN_HEAD_DIM,
    AttnMask,
    KVCache,
    attend,
    dense_document_mask,
    flex_masks,
    rows_at,
)
from model.moe import (
    MoE,
    MoEStats,
    autocast_dtype,
    aux_loss_weight,
    consume_moe_stats,
    validate_moe_config,
)
from model.rope import apply_rope, rope_qkv, rope_tables, split_qkv

# --------------------------------------------------------------------------------------------
# Config
# --------------------------------------------------------------------------------------------

NORM_TYPES = ("rmsnorm", "layernorm")
NORM_PLACEMENTS = ("pre", "post", "sandwich", "deepnorm")
POS_ENCODINGS = ("rope", "alibi", "learned", "sinusoidal", "none")



@dataclass
class ModelConfig:
    """Hyper-parameters of :class:`Transformer`.

    ``n_kv_heads`` defaults to ``n_heads`` (multi-head attention) and must divide it (grouped-
    query attention). ``d_ff`` defaults to the SwiGLU size 8/3 * d_model rounded up to a
    multiple of ``multiple_of``. ``n_experts == 0`` gives a dense model; otherwise every
    ``moe_every``-th layer (layers ``moe_every - 1``, ``2 * moe_every - 1``, ...) is a mixture
    of ``n_experts`` SwiGLU experts of width ``moe_d_ff`` (default ``d_ff``), each token routed
    to ``experts_per_token`` of them.
    """

    vocab_size: int = 50304
    d_model: int = 768
    n_layers: int = 12
    n_heads: int = 12
    n_kv_heads: int | None = None
    d_ff: int | None = None
    multiple_of: int = 256
    max_seq_len: int = 2048
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5
    tie_embeddings: bool = True
    qk_norm: bool = False
    init_std: float = 0.02
    # "flex": FlexAttention for ALiBi / sliding windows / soft-cap / document masks on CUDA;
    # "sdpa": explicit dense masks for them (the reference). Plain causal is SDPA either way.
    attn_impl: str = "flex"
    # Mixture of experts
    n_experts: int = 0
    experts_per_token: int = 2
    moe_every: int = 1
    moe_d_ff: int | None = None
    # "aux" (Switch/GShard loss), "bias" (DeepSeek-V3 aux-loss-free: no aux term in the loss)
    # or "none" (expert choice); options and their checks in model/moe.py
    router_balance: str = "aux"
    aux_loss_coef: float = 0.01  # used in "aux" mode only
    z_loss_coef: float = 0.001
    bias_update_rate: float = 0.001
    norm_topk_prob: bool = True
    grouped_mm: bool = True  # use torch._grouped_mm for bf16 experts when available
    n_shared_experts: int = 0  # always-on experts (DeepSeekMoE), each moe_d_ff wide
    moe_routing: str = "token_choice"  # token_choice | expert_choice
    moe_capacity_factor: float | None = None  # None: dropless; else tokens over capacity dropped
    router_score: str = "softmax"  # softmax | sigmoid (DeepSeek-V3 affinities)
    # Architecture knobs (see the module docstring)
    norm_type: str = "rmsnorm"  # rmsnorm | layernorm
    norm_placement: str = "pre"  # pre | post | sandwich | deepnorm
    pos_encoding: str = "rope"  # rope | alibi | learned | sinusoidal | none
    output_z_loss_coef: float = 0.0  # PaLM uses 1e-4
    attn_logit_softcap: float | None = None  # Gemma 2 uses 50
    final_logit_softcap: float | None = None  # Gemma 2 uses 30
    sliding_window: int | None = None  # tokens a query sees on sliding-window layers
    sliding_window_layers: list[int] | None = None  # None: every layer (if sliding_window)
    # GPT-2 style options (the "gpt2-124m" preset): biases in every linear layer and layer
    # norm, a GELU (tanh) feed-forward instead of SwiGLU, dropout on embeddings, attention
    # probabilities and both residual branches
    bias: bool = False
    mlp: str = "swiglu"  # swiglu | gelu (dense layers; experts are SwiGLU)
    dropout: float = 0.0
    # Precision: False carries the residual stream in bf16 under bf16 autocast, as
    # Megatron-LM does by default (its fp32_residual_connection is off)
    fp32_residual: bool = True

    def __post_init__(self) -> None:
        if self.n_kv_heads is None:
            self.n_kv_heads = self.n_heads
        if self.d_ff is None:
            hidden = int(8 * self.d_model / 3)
            self.d_ff = self.multiple_of * math.ceil(hidden / self.multiple_of)
        if self.moe_d_ff is None:
            self.moe_d_ff = self.d_ff
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model={self.d_model} not divisible by n_heads={self.n_heads}")
        if self.n_heads % self.n_kv_heads:
            raise ValueError(f"n_kv_heads={self.n_kv_heads} must divide n_heads={self.n_heads}")
        if self.head_dim % 2 and self.pos_encoding == "rope":
            raise ValueError("head_dim must be even for rotary embeddings")
        validate_moe_config(self)
        if self.attn_impl not in ("sdpa", "flex"):
            raise ValueError(f"attn_impl must be 'sdpa' or 'flex', not {self.attn_impl!r}")
        choices = {"norm_type": NORM_TYPES, "norm_placement": NORM_PLACEMENTS,
                   "pos_encoding": POS_ENCODINGS}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, not {getattr(self, name)!r}")
        if self.pos_encoding == "sinusoidal" and self.d_model % 2:
            raise ValueError("sinusoidal position encoding needs an even d_model")
        for name in ("attn_logit_softcap", "final_logit_softcap"):
            cap = getattr(self, name)
            if cap is not None and not cap > 0:
                raise ValueError(f"{name} must be positive (or null for no cap)")
        if self.mlp not in ("swiglu", "gelu"):
            raise ValueError(f"mlp must be 'swiglu' or 'gelu', not {self.mlp!r}")
        if self.mlp == "gelu" and self.n_experts:
            raise ValueError("mlp: gelu is for dense models; MoE experts are SwiGLU")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), not {self.dropout}")
        if self.sliding_window is not None and self.sliding_window < 1:
            raise ValueError("sliding_window must be >= 1 (or null for full attention)")
        if self.sliding_window_layers is not None:
            self.sliding_window_layers = sorted({int(i) for i in self.sliding_window_layers})
            if self.sliding_window is None:
                raise ValueError("sliding_window_layers given without sliding_window")
            bad = [i for i in self.sliding_window_layers if not 0 <= i < self.n_layers]
            if bad:
                raise ValueError(f"sliding_window_layers {bad} outside [0, {self.n_layers})")

    @property
    def head_dim(self) -> int:
        """Width of one attention head."""
        return self.d_model // self.n_heads

    def window_of(self, layer_id: int) -> int | None:
        """The sliding-window size of layer ``layer_id``, or None for full causal attention."""
        if self.sliding_window is None:
            return None
        if self.sliding_window_layers is None or layer_id in self.sliding_window_layers:
            return self.sliding_window
        return None

    def is_moe_layer(self, layer_id: int) -> bool:
        """Whether layer ``layer_id`` (0-based) uses a mixture of experts."""
        return self.n_experts > 0 and (layer_id + 1) % self.moe_every == 0

    def to_dict(self) -> dict[str, Any]:
        """Plain-dict form (stored in checkpoints)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelConfig:
        """Build from a dict, rejecting unknown keys (typos in configs fail loudly)."""
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown model config keys: {sorted(unknown)}")
        return cls(**d)


# Named sizes. "125m"/"350m" follow GPT-3 small / medium shapes (Llama-style blocks).
PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(vocab_size=512, d_model=64, n_layers=2, n_heads=4, n_kv_heads=2, d_ff=128,
                 max_seq_len=256),
    "125m": dict(d_model=768, n_layers=12, n_heads=12, d_ff=2048, max_seq_len=2048),
    "350m": dict(d_model=1024, n_layers=24, n_heads=16, d_ff=2816, max_seq_len=2048),
    # 8 experts top-2, expert width half the dense d_ff: same active parameters as "125m".
    "moe-8x2-125m": dict(d_model=768, n_layers=12, n_heads=12, d_ff=2048, max_seq_len=2048,
                         n_experts=8, experts_per_token=2, moe_d_ff=1024),
    # GPT-2 small exactly: 124,439,808 parameters with the tied embedding (export as
    # GPT2LMHeadModel with `python -m model.export`)
    "gpt2-124m": dict(vocab_size=50257, d_model=768, n_layers=12, n_heads=12, d_ff=3072,
                      max_seq_len=1024, norm_type="layernorm", pos_encoding="learned",
                      bias=True, mlp="gelu", dropout=0.1, multiple_of=1),
}


def config_from_preset(name: str, **overrides: Any) -> ModelConfig:
    """A :class:`ModelConfig` from a named preset with keyword overrides."""
    if name not in PRESETS:
        raise ValueError(f"unknown model preset {name!r}; known: {sorted(PRESETS)}")
    return ModelConfig.from_dict({**PRESETS[name], **overrides})


# --------------------------------------------------------------------------------------------
# Layers
# --------------------------------------------------------------------------------------------


class RMSNorm(nn.Module):
    """Root-mean-square layer norm (computed in float32), with a learned gain and no bias."""

    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise the last dimension of ``x``."""
        xf = x.float()
        y = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return (y * self.weight.float()).type_as(x)


class LayerNorm(nn.Module):
    """Layer norm (mean-centred, computed in float32) with a learned gain and, with
    ``bias``, a learned bias."""

    def __init__(self, dim: int, eps: float = 1e-5, bias: bool = False) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise the last dimension of ``x``."""
        b = None if self.bias is None else self.bias.float()
        y = F.layer_norm(x.float(), (x.shape[-1],), self.weight.float(), b, self.eps)
        return y.type_as(x)


def make_norm(cfg: ModelConfig, dim: int | None = None) -> nn.Module:
    """The normalisation layer ``cfg.norm_type`` selects, over ``dim`` (default d_model)."""
    dim = cfg.d_model if dim is None else dim
    if cfg.norm_type == "layernorm":
        return LayerNorm(dim, cfg.norm_eps, bias=cfg.bias)
    return RMSNorm(dim, cfg.norm_eps)


def deepnorm_constants(n_layers: int) -> tuple[float, float]:
    """DeepNet (Wang et al. 2022, table 1) constants for a decoder-only model of N layers.

    ``alpha = (2N)^(1/4)`` multiplies the residual before the post-norm, ``beta = (8N)^(-1/4)``
    is the Xavier-normal gain of the feed-forward, value and attention-output weights.
    """
    return (2.0 * n_layers) ** 0.25, (8.0 * n_layers) ** -0.25


def alibi_slopes(n_heads: int) -> torch.Tensor:
    """ALiBi head slopes (Press et al. 2022): ``2^(-8 i / n)`` for ``i = 1..n`` when ``n`` is a
    power of two; otherwise those of the largest power of two ``m < n`` followed by every other
    slope of ``2m`` heads (the reference implementation's rule)."""

    def power_of_two(n: int) -> list[float]:
        return [2.0 ** (-8.0 * i / n) for i in range(1, n + 1)]

    m = 2 ** math.floor(math.log2(n_heads))
    slopes = power_of_two(m)
    if m < n_heads:
        slopes += power_of_two(2 * m)[0::2][: n_heads - m]
    return torch.tensor(slopes, dtype=torch.float32)


def sinusoidal_table(max_seq_len: int, dim: int) -> torch.Tensor:
    """Fixed position encodings ``[max_seq_len, dim]``: ``sin(p / 10000^(2i/d))`` in the even
    columns and ``cos`` of the same angle in the odd columns (Vaswani et al. 2017)."""
    pos = torch.arange(max_seq_len, dtype=torch.float64)[:, None]
    inv = 10000.0 ** (-torch.arange(0, dim, 2, dtype=torch.float64) / dim)
    table = torch.zeros(max_seq_len, dim, dtype=torch.float64)
    table[:, 0::2] = torch.sin(pos * inv)
    table[:, 1::2] = torch.cos(pos * inv)
    return table.float()


class Attention(nn.Module):
    """Causal grouped-query self-attention: rotary embeddings or ALiBi (or none), optional
    QK-norm, attention-logit soft-capping and a sliding window, and an optional KV cache."""

    def __init__(self, cfg: ModelConfig, layer_id: int = 0) -> None:
        super().__init__()
        self.layer_id = layer_id
        self.n_heads = cfg.n_heads
        self.n_kv_heads = cfg.n_kv_heads
        self.head_dim = cfg.head_dim
        qkv_out = (cfg.n_heads + 2 * cfg.n_kv_heads) * cfg.head_dim
        self.wqkv = nn.Linear(cfg.d_model, qkv_out, bias=cfg.bias)
        self.wo = nn.Linear(cfg.n_heads * cfg.head_dim, cfg.d_model, bias=cfg.bias)
        self.dropout = cfg.dropout
        self.resid_drop = nn.Dropout(cfg.dropout)
        self.q_norm = make_norm(cfg, cfg.head_dim) if cfg.qk_norm else None
        self.k_norm = make_norm(cfg, cfg.head_dim) if cfg.qk_norm else None
        self.rope = cfg.pos_encoding == "rope"
        self.window = cfg.window_of(layer_id)
        self.softcap = cfg.attn_logit_softcap
        if cfg.pos_encoding == "alibi":
            self.register_buffer("alibi_slopes", alibi_slopes(cfg.n_heads), persistent=False)
        else:
            self.alibi_slopes = None
        # Plain causal attention: the fused kernel with is_causal=True (the default path).
        self.plain = self.alibi_slopes is None and self.window is None and self.softcap is None

    def forward(self, x: torch.Tensor, cos: torch.Tensor | None, sin: torch.Tensor | None,
                mask: AttnMask = None, cache: KVCache | None = None) -> torch.Tensor:
        """Attend over ``x`` ``[B, T, d_model]``; ``mask`` as :func:`model.attention.attend`
        takes it.

        ``cos``/``sin`` are the rotary tables at the positions of ``x`` (unused unless RoPE).
        With ``cache``, ``x`` holds the tokens at positions ``cache.pos..cache.pos+T-1`` and
        attends to the cached past too.
        """
        B, T, _ = x.shape
        H, KV, D = self.n_heads, self.n_kv_heads, self.head_dim
        qkv = self.wqkv(x)
        if self.rope and self.q_norm is None:  # the common case: one-pass RoPE backward
            q, k, v = rope_qkv(qkv, H, KV, D, cos, sin)
        else:
            q, k, v = split_qkv(qkv, H, KV, D)
            if self.q_norm is not None:
                q, k = self.q_norm(q), self.k_norm(k)
            if self.rope:
                q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # [B, heads, T, D]
        start = 0
        if cache is not None:
            start = cache.pos
            k, v = cache.update(self.layer_id, k, v)
        y = attend(q, k, v, start=start, mask=mask, window=self.window,
                   alibi_slopes=self.alibi_slopes, softcap=self.softcap,
                   dropout_p=self.dropout if self.training else 0.0)
        return self.resid_drop(self.wo(y.transpose(1, 2).reshape(B, T, H * D)))


class SwiGLU(nn.Module):
    """Feed-forward ``w2(silu(x W1) * (x W3))`` with W1 and W3 fused into one matrix."""

    def __init__(self, d_model: int, d_ff: int, bias: bool = False, dropout: float = 0.0) -> None:
        super().__init__()
        self.w13 = nn.Linear(d_model, 2 * d_ff, bias=bias)
        self.w2 = nn.Linear(d_ff, d_model, bias=bias)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the feed-forward to ``x`` ``[..., d_model]``."""
        gate, up = self.w13(x).chunk(2, dim=-1)
        return self.drop(self.w2(F.silu(gate) * up))


class GeluMLP(nn.Module):
    """GPT-2's feed-forward ``w2(gelu_tanh(x W1))`` (``mlp: gelu``)."""

    def __init__(self, d_model: int, d_ff: int, bias: bool = False, dropout: float = 0.0) -> None:
        super().__init__()
        self.w1 = nn.Linear(d_model, d_ff, bias=bias)
        self.w2 = nn.Linear(d_ff, d_model, bias=bias)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the feed-forward to ``x`` ``[..., d_model]``."""
        return self.drop(self.w2(F.gelu(self.w1(x), approximate="tanh")))


def make_mlp(cfg: ModelConfig) -> nn.Module:
    """The dense feed-forward ``cfg.mlp`` selects."""
    cls = GeluMLP if cfg.mlp == "gelu" else SwiGLU
    return cls(cfg.d_model, cfg.d_ff, bias=cfg.bias, dropout=cfg.dropout)


class Block(nn.Module):
    """Transformer block: attention then feed-forward (dense or MoE), each wrapped in the
    residual/normalisation arrangement ``cfg.norm_placement`` selects."""

    def __init__(self, cfg: ModelConfig, layer_id: int) -> None:
        super().__init__()
        self.placement = cfg.norm_placement
        self.alpha = deepnorm_constants(cfg.n_layers)[0] if self.placement == "deepnorm" else 1.0
        self.attn_norm = make_norm(cfg)
        self.attn = Attention(cfg, layer_id)
        self.ffn_norm = make_norm(cfg)
        if self.placement == "sandwich":
            self.attn_out_norm = make_norm(cfg)
            self.ffn_out_norm = make_norm(cfg)
        self.is_moe = cfg.is_moe_layer(layer_id)
        self.ffn: nn.Module = MoE(cfg) if self.is_moe else make_mlp(cfg)

    def _ffn(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        if self.is_moe:
            return self.ffn(x)
        return self.ffn(x), None, None

    def forward(self, x: torch.Tensor, cos: torch.Tensor | None, sin: torch.Tensor | None,
                mask: AttnMask = None, cache: KVCache | None = None
                ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """Return the new residual stream and the MoE ``(aux_loss, z_loss)`` (None if dense)."""
        if self.placement == "pre":
            x = x + self.attn(self.attn_norm(x), cos, sin, mask, cache)
            y, aux, z = self._ffn(self.ffn_norm(x))
            return x + y, aux, z
        if self.placement == "sandwich":
            x = x + self.attn_out_norm(self.attn(self.attn_norm(x), cos, sin, mask, cache))
            y, aux, z = self._ffn(self.ffn_norm(x))
            return x + self.ffn_out_norm(y), aux, z
        # post / deepnorm: normalise after the residual sum (alpha = 1 for post).
        x = self.attn_norm(self.alpha * x + self.attn(x, cos, sin, mask, cache))
        y, aux, z = self._ffn(x)
        return self.ffn_norm(self.alpha * x + y), aux, z


# --------------------------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------------------------


class LMOutput(NamedTuple):
    """Forward result when targets are given.

    ``loss = ce + aux_coef*aux + z_coef*z + output_z_coef*output_z``, with ``aux_coef`` 0 in the
    auxiliary-loss-free balancing mode (``aux`` is reported all the same).
    """

    logits: torch.Tensor
    loss: torch.Tensor
    ce_loss: torch.Tensor
    aux_loss: torch.Tensor  # sum over MoE layers (0 for dense models)
    z_loss: torch.Tensor  # router z-loss, sum over MoE layers (0 for dense models)
    output_z_loss: torch.Tensor | None = None  # mean logsumexp(logits)^2 over scored tokens


class Transformer(nn.Module):
    """Decoder-only language model (see the module docstring for the architecture)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.tok_emb = nn.Embedding(config.vocab_size, config.d_model)
        self.pos_emb = (nn.Embedding(config.max_seq_len, config.d_model)
                        if config.pos_encoding == "learned" else None)
        if config.pos_encoding == "sinusoidal":
            self.register_buffer("pos_table", sinusoidal_table(config.max_seq_len, config.d_model),
                                 persistent=False)
        else:
            self.pos_table = None
        self.emb_drop = nn.Dropout(config.dropout)
        self.layers = nn.ModuleList(Block(config, i) for i in range(config.n_layers))
        # Post-norm blocks already end with a norm; a final one would be a no-op rescale.
        self.norm = (nn.Identity() if config.norm_placement in ("post", "deepnorm")
                     else make_norm(config))
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        if config.tie_embeddings:
            self.lm_head.weight = self.tok_emb.weight
        if config.pos_encoding == "rope":
            cos, sin = rope_tables(config.head_dim, config.max_seq_len, config.rope_theta)
            self.register_buffer("rope_cos", cos, persistent=False)
            self.register_buffer("rope_sin", sin, persistent=False)
        else:
            self.rope_cos = self.rope_sin = None
        self.reset_parameters()

    # ---- init -------------------------------------------------------------------------------
    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Normal(0, init_std) init; residual output projections scaled by 1/sqrt(2*n_layers)."""
        std = self.config.init_std
        out_std = std / math.sqrt(2 * self.config.n_layers)
        for name, p in self.named_parameters():
            if name.endswith("norm.weight"):
                p.fill_(1.0)
            elif name.endswith(".bias"):
                p.zero_()
            elif name.endswith(("wo.weight", "w2.weight", "ffn.w2")):
                nn.init.normal_(p, 0.0, out_std)
            else:
                nn.init.normal_(p, 0.0, std)
        for m in self.modules():
            if isinstance(m, MoE):
                m.expert_bias.zero_()
                m.reset_counts()
        if self.config.norm_placement == "deepnorm":
            self._deepnorm_init()

    @torch.no_grad()
    def _deepnorm_init(self) -> None:
        """DeepNet init: Xavier-normal with gain ``beta`` for the value, attention-output and
        feed-forward weights, gain 1 for the query and key weights."""
        _, beta = deepnorm_constants(self.config.n_layers)

        def xavier(w: torch.Tensor, fan_in: int, fan_out: int, gain: float) -> None:
            nn.init.normal_(w, 0.0, gain * math.sqrt(2.0 / (fan_in + fan_out)))

        d = self.config.d_model
        for block in self.layers:
            a = block.attn
            q, k, v = a.wqkv.weight.split([a.n_heads * a.head_dim, a.n_kv_heads * a.head_dim,
                                           a.n_kv_heads * a.head_dim], dim=0)
            xavier(q, d, q.shape[0], 1.0)
            xavier(k, d, k.shape[0], 1.0)
            xavier(v, d, v.shape[0], beta)
            xavier(a.wo.weight, a.wo.in_features, d, beta)
            ffn = block.ffn
            if isinstance(ffn, MoE):
                f = ffn.w2.shape[1]
                xavier(ffn.w13, d, f, beta)
                xavier(ffn.w2, f, d, beta)
                if ffn.shared is not None:
                    f = ffn.shared.w2.in_features
                    xavier(ffn.shared.w13.weight, d, f, beta)
                    xavier(ffn.shared.w2.weight, f, d, beta)
            else:
                f = ffn.w2.in_features
                xavier(ffn.w13.weight, d, f, beta)
                xavier(ffn.w2.weight, f, d, beta)

    # ---- masks ------------------------------------------------------------------------------
    def attention_mask(self, T: int, doc_ids: torch.Tensor | None = None,
                       impl: str | None = None,
                       device: torch.device | str | None = None) -> AttnMask:
        """The ``attn_mask`` for a forward pass over ``T`` tokens from position 0.

        ``impl`` defaults to ``config.attn_impl`` on CUDA and ``"sdpa"`` on CPU (FlexAttention
        has no CPU backward; ``impl="flex"`` forces it there for inference) and for head dims
        below ``FLEX_MIN_HEAD_DIM`` (which the CUDA kernel refuses). ``"flex"`` gives a
        :class:`~model.attention.FlexMask` (block masks for the layers that need FlexAttention;
        with ``doc_ids`` ``[B, T]`` for every layer), ``"sdpa"`` a dense bool ``[B, 1, T, T]``
        document mask, or None without documents (layers then build their explicit masks).
        Build it outside ``torch.compile`` and pass it to :meth:`forward` to reuse it.
        """
        if device is None:
            device = doc_ids.device if doc_ids is not None else self.tok_emb.weight.device
        device = torch.device(device)
        small_heads = device.type == "cuda" and self.config.head_dim < FLEX_MIN_HEAD_DIM
        if impl is None:
            impl = self.config.attn_impl if device.type == "cuda" and not small_heads else "sdpa"
        if impl not in ("flex", "sdpa"):
            raise ValueError(f"attention impl must be 'flex' or 'sdpa', not {impl!r}")
        if impl == "flex" and small_heads:
            raise ValueError(f"FlexAttention on CUDA needs head_dim >= {FLEX_MIN_HEAD_DIM} "
                             f"(got {self.config.head_dim}); use impl='sdpa'")
        attns = [layer.attn for layer in self.layers]
        if impl == "flex":
            windows = {a.window for a in attns if doc_ids is not None or not a.plain}
            if not windows:
                return None  # every layer is plain causal: SDPA
            return flex_masks(T, windows, doc_ids, device)
        return None if doc_ids is None else dense_document_mask(doc_ids)

    def document_mask(self, doc_ids: torch.Tensor, impl: str | None = None) -> AttnMask:
        """The attention mask for document-masked inputs (``doc_ids`` ``[B, T]``, ints); see
        :meth:`attention_mask`."""
        return self.attention_mask(doc_ids.shape[1], doc_ids, impl)

    # ---- forward ----------------------------------------------------------------------------
    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None,
                doc_ids: torch.Tensor | None = None, attn_mask: AttnMask = None,
                cache: KVCache | None = None) -> torch.Tensor | LMOutput:
        """Logits ``[B, T, vocab]`` for token ids ``idx`` ``[B, T]``.

        With ``targets`` (``[B, T]``, ``-100`` ignored) returns :class:`LMOutput` with the loss.
        ``doc_ids`` (``[B, T]``) or a prebuilt ``attn_mask`` turns on document masking. With a
        :class:`KVCache`, ``idx`` continues the cached tokens (positions ``cache.pos`` on) and
        the cache is advanced by ``T`` (a static cache's tensor position is never read on the
        host: the caller keeps it within ``max_seq_len``).
        """
        B, T = idx.shape
        start = 0 if cache is None else cache.pos
        if isinstance(start, int) and start + T > self.config.max_seq_len:
            raise ValueError(f"sequence length {start + T} > max_seq_len {self.config.max_seq_len}")
        if attn_mask is None and (doc_ids is not None or (
                isinstance(start, int) and start == 0 and idx.device.type == "cuda")):
            attn_mask = self.attention_mask(T, doc_ids, device=idx.device)
        cos = sin = None
        if self.rope_cos is not None:
            cos, sin = rows_at(self.rope_cos, start, T), rows_at(self.rope_sin, start, T)
        x = self.tok_emb(idx)
        if self.pos_emb is not None:
            x = x + rows_at(self.pos_emb.weight, start, T)
        elif self.pos_table is not None:
            x = x + rows_at(self.pos_table, start, T).to(x.dtype)
        x = self.emb_drop(x)
        if not self.config.fp32_residual and autocast_dtype(x.device.type) == torch.bfloat16:
            x = x.to(torch.bfloat16)  # not fp16: its range cannot hold a long residual sum
        aux_total: torch.Tensor | None = None
        z_total: torch.Tensor | None = None
        for layer in self.layers:
            x, aux, z = layer(x, cos, sin, attn_mask, cache)
            if aux is not None:
                aux_total = aux if aux_total is None else aux_total + aux
                z_total = z if z_total is None else z_total + z
        if cache is not None:
            cache.advance(T)
        return self._head(x, targets, aux_total, z_total)

    def _head(self, x: torch.Tensor, targets: torch.Tensor | None,
              aux_total: torch.Tensor | None,
              z_total: torch.Tensor | None) -> torch.Tensor | LMOutput:
        """Final norm, LM head and (with ``targets``) the losses. A method of its own so that
        ``torch.compile`` compiles it as its own graph when the block loop cannot be one
        (FSDP2's hooks break the graph at every block; without this the head and the
        cross-entropy over the whole vocabulary would run eagerly)."""
        logits = self.lm_head(self.norm(x))
        cap = self.config.final_logit_softcap
        if cap is not None:
            logits = cap * torch.tanh(logits / cap)
        if targets is None:
            return logits
        flat = logits.float().view(-1, logits.size(-1))
        ce = F.cross_entropy(flat, targets.reshape(-1), ignore_index=-100)
        zero = ce.new_zeros(())
        aux_total = zero if aux_total is None else aux_total
        z_total = zero if z_total is None else z_total
        loss = ce + aux_loss_weight(self.config) * aux_total + self.config.z_loss_coef * z_total
        out_z = zero
        if self.config.output_z_loss_coef:
            scored = targets.reshape(-1) != -100
            out_z = torch.logsumexp(flat[scored], dim=-1).pow(2).mean()
            loss = loss + self.config.output_z_loss_coef * out_z
        return LMOutput(logits, loss, ce, aux_total, z_total, out_z)

    # ---- MoE bookkeeping --------------------------------------------------------------------
    def moe_layers(self) -> list[MoE]:
        """The MoE feed-forward modules, in layer order."""
        return [m for m in self.modules() if isinstance(m, MoE)]

    @torch.no_grad()
    def consume_moe_stats(self, all_reduce: Any = None,
                          keep: torch.Tensor | None = None) -> MoEStats | None:
        """Per-layer expert load ``[n_moe_layers, E]`` and dropped fraction ``[n_moe_layers]``
        since the last call (summed over ranks with ``all_reduce``, an in-place SUM callable);
        applies the aux-loss-free bias update (not where the device flag ``keep`` is 0) and
        resets the counters. None for dense models (see :func:`model.moe.consume_moe_stats`)."""
        return consume_moe_stats(self.moe_layers(), all_reduce, keep)

    @torch.no_grad()
    def consume_expert_load(self, all_reduce: Any = None) -> torch.Tensor | None:
        """The expert load part of :meth:`consume_moe_stats` (fractions ``[n_moe_layers, E]``)."""
        stats = self.consume_moe_stats(all_reduce)
        return None if stats is None else stats.load

    # ---- accounting -------------------------------------------------------------------------
    def num_params(self, active: bool = False, embedding: bool = True) -> int:
        """Parameter count; ``active`` counts only the k of E experts a token uses;
        ``embedding=False`` leaves out the input embedding table (kept when tied to the head).
        """
        total = 0.0
        cfg = self.config
        for name, p in self.named_parameters():  # tied weights are yielded once
            n = p.numel()
            if name == "tok_emb.weight" and not embedding and not cfg.tie_embeddings:
                continue
            if active and name.endswith(("ffn.w13", "ffn.w2")) and cfg.n_experts:
                n = n * cfg.experts_per_token / cfg.n_experts
            total += n
        return int(total)

    def flops_per_token(self, seq_len: int) -> float:
        """Training FLOPs per token, PaLM appendix B: ``6 N + 12 L H Q T``.

        ``N`` = active non-embedding parameters (the LM head counted; with tied embeddings the
        shared matrix counts once), ``L`` layers, ``H`` heads, ``Q`` head dim, ``T`` sequence
        length. The attention term counts the full (non-causal) score matrix, as PaLM does.
        """
        cfg = self.config
        n = self.num_params(active=True, embedding=False)
        return 6.0 * n + 12.0 * cfg.n_layers * cfg.n_heads * cfg.head_dim * seq_len
