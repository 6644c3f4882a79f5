"""Mixture-of-experts feed-forward layer: routing, balancing, dropping and expert computation.

One :class:`MoE` module replaces the SwiGLU feed-forward on the layers
``ModelConfig.is_moe_layer`` selects. Options (fields of ``ModelConfig``, checked by
:func:`validate_moe_config`):

* ``n_experts`` routed SwiGLU experts of hidden width ``moe_d_ff`` (default ``d_ff``). Many
  narrow experts (fine-grained experts, DeepSeekMoE): raise ``n_experts`` and
  ``experts_per_token`` by a factor m and divide ``moe_d_ff`` by m; active parameters stay the
  same, the number of expert combinations grows.
* ``n_shared_experts``: always-on experts (DeepSeekMoE) beside the routed ones, each
  ``moe_d_ff`` wide, computed as one SwiGLU of width ``n_shared_experts * moe_d_ff`` (the sum of
  several SwiGLUs equals one SwiGLU over their concatenated hidden units).
* ``moe_routing``: ``token_choice`` (each token picks its top ``experts_per_token`` experts) or
  ``expert_choice`` (Zhou et al. 2022: each expert picks its top ``C`` tokens of the batch,
  ``C = capacity_factor * N * k / E``; balanced by construction, but a token's experts depend on
  the other tokens of the batch, later ones included).
* ``moe_capacity_factor``: ``None`` (default) is dropless token choice. A number caps every
  expert at ``C = ceil(factor * N * k / E)`` of the ``N * k`` (token, expert) assignments of a
  batch of ``N`` tokens, kept in token order; the rest are dropped (the token keeps its
  residual and its other experts). The dropped fraction is counted per layer. Dropping
  applies in training mode only: evaluation and generation route dropless, so that a token's
  output never depends on the other tokens of the batch.
* ``router_score``: ``softmax`` (probabilities over experts) or ``sigmoid`` (DeepSeek-V3:
  per-expert affinities; the combine weights are the chosen affinities normalised over the
  chosen experts when ``norm_topk_prob``).
* ``router_balance``: ``aux`` (Switch/GShard loss ``aux = E * sum_i f_i P_i``, weighted by
  ``aux_loss_coef``), ``bias`` (DeepSeek-V3 auxiliary-loss-free: a per-expert bias added to the
  scores for the top-k choice only, moved by ``bias_update_rate`` toward balance after every
  optimizer step; no auxiliary loss is added, the aux value is still reported) or ``none``
  (required by expert choice). The router z-loss ``mean(logsumexp(logits)^2)``
  (``z_loss_coef``) is added in every mode.

Expert computation never reads device values on the host (no ``.item()``/``.tolist()``,
no data-dependent shapes): bf16 dropless token choice sorts the (token, expert) pairs by expert
and runs ``torch._grouped_mm`` per projection; every other case (float32/float16, a capacity
factor, expert choice) scatters the pairs into a static ``[E, C, d]`` buffer and runs batched
matmuls (``C = N`` for dropless, the worst case, so that path costs ``E / k`` times the useful
FLOPs in float32: it is the exact, sync-free fallback, not the fast path).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from model.casts import cast_saved

if TYPE_CHECKING:  # model.model imports this module
    from model.model import ModelConfig

MOE_ROUTINGS = ("token_choice", "expert_choice")
ROUTER_SCORES = ("softmax", "sigmoid")
ROUTER_BALANCES = ("aux", "bias", "none")


def validate_moe_config(cfg: ModelConfig) -> None:
    """Raise ``ValueError`` naming the field for a bad MoE option or combination of options."""
    for name, allowed in (("moe_routing", MOE_ROUTINGS), ("router_score", ROUTER_SCORES),
                          ("router_balance", ROUTER_BALANCES)):
        if getattr(cfg, name) not in allowed:
            raise ValueError(f"{name} must be one of {allowed}, not {getattr(cfg, name)!r}")
    if cfg.n_experts < 0:
        raise ValueError("n_experts must be >= 0 (0 = dense model)")
    if cfg.moe_every < 1:
        raise ValueError("moe_every must be >= 1")
    if cfg.n_shared_experts < 0:
        raise ValueError("n_shared_experts must be >= 0")
    for name in ("aux_loss_coef", "z_loss_coef", "bias_update_rate"):
        if getattr(cfg, name) < 0:
            raise ValueError(f"{name} must be >= 0")
    cf = cfg.moe_capacity_factor
    if cf is not None and not cf > 0:
        raise ValueError("moe_capacity_factor must be > 0 (or null for dropless routing)")
    if cfg.moe_d_ff is not None and cfg.moe_d_ff < 1:
        raise ValueError("moe_d_ff (expert hidden size) must be >= 1")
    if not cfg.n_experts:
        used = [n for n, dense in (("n_shared_experts", 0), ("moe_capacity_factor", None),
                                   ("moe_routing", "token_choice"))
                if getattr(cfg, n) != dense]
        if used:
            raise ValueError(f"{used} set on a dense model: set n_experts > 0 to use experts")
        return
    if not 1 <= cfg.experts_per_token <= cfg.n_experts:
        raise ValueError(f"experts_per_token={cfg.experts_per_token} must be in "
                         f"[1, n_experts={cfg.n_experts}]")
    if cfg.moe_routing == "expert_choice" and cfg.router_balance != "none":
        raise ValueError("moe_routing: expert_choice is balanced by construction (every expert "
                         "takes the same number of tokens): set router_balance: none")
    if cfg.moe_routing == "token_choice" and cfg.router_balance == "none" and cfg.n_experts > 1:
        raise ValueError("token-choice routing needs balancing: router_balance aux or bias "
                         "(none is for expert_choice)")


def aux_loss_weight(cfg: ModelConfig) -> float:
    """Weight of the load-balancing loss in the training loss: ``aux_loss_coef`` in ``aux``
    mode, 0 for auxiliary-loss-free balancing (``bias``) and expert choice (``none``)."""
    return cfg.aux_loss_coef if cfg.router_balance == "aux" else 0.0


class RouterOutput(NamedTuple):
    """What the token-choice router decides for ``N`` tokens."""

    expert_idx: torch.Tensor  # [N, k] int64, chosen experts
    weights: torch.Tensor  # [N, k] float32, combine weights
    probs: torch.Tensor  # [N, E] float32, router scores (softmax probabilities or sigmoids)
    logits: torch.Tensor  # [N, E] float32
    counts: torch.Tensor  # [E] float32, (token, expert) assignments per expert
    aux_loss: torch.Tensor  # scalar, Switch/GShard load-balancing loss
    z_loss: torch.Tensor  # scalar, router z-loss


class MoEStats(NamedTuple):
    """Per-layer routing statistics since the last read (see :func:`consume_moe_stats`)."""

    load: torch.Tensor  # [n_moe_layers, E] fraction of assignments per expert
    dropped: torch.Tensor  # [n_moe_layers] fraction of assignments (tokens, expert choice) dropped


def autocast_dtype(device_type: str) -> torch.dtype | None:
    """The autocast dtype active on ``device_type``, or None."""
    if torch.is_autocast_enabled(device_type):
        return torch.get_autocast_dtype(device_type)
    return None


class _SortPairs(torch.autograd.Function):
    """Rows ``x[order[j] // k]`` for the ``N * k`` (token, expert) pairs in sorted order
    (``x`` ``[N, d]``, ``order`` a permutation of the pairs with inverse ``inverse``). The
    backward is a gather and a sum over each token's ``k`` pairs, not an atomic scatter-add."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, order: torch.Tensor, inverse: torch.Tensor,
                k: int) -> torch.Tensor:
        ctx.save_for_backward(inverse)
        ctx.k = k
        return x.index_select(0, order // k)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None, None]:
        (inverse,) = ctx.saved_tensors
        g = grad[inverse]
        return g.view(-1, ctx.k, g.shape[-1]).sum(dim=1), None, None, None


class _PermuteRows(torch.autograd.Function):
    """``x[order]`` for a permutation ``order`` with inverse ``inverse``; the backward is the
    gather ``grad[inverse]``."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, order: torch.Tensor,
                inverse: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(inverse)
        return x.index_select(0, order)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        (inverse,) = ctx.saved_tensors
        return grad[inverse], None, None


def top_k_indices(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Indices ``[N, k]`` of the ``k`` largest of each row of finite ``scores`` ``[N, E]``,
    largest first: ``scores.topk(k).indices``, with ties broken toward the lowest index.

    ``k`` rounds of argmax over the row with the earlier picks masked out: for the few
    experts a token picks, these fuse into one pass over ``scores`` under ``torch.compile``,
    where ``topk`` launches a sort per call (the largest routing kernel before)."""
    scores = scores.detach()  # indices only: no autograd record of the masking rounds
    cols = torch.arange(scores.shape[-1], device=scores.device)
    picks = []
    for _ in range(k):
        i = scores.argmax(dim=-1, keepdim=True)
        picks.append(i)
        scores = scores.masked_fill(cols == i, float("-inf"))
    return torch.cat(picks, dim=-1)


def capacity(n_tokens: int, factor: float | None, k: int, n_experts: int) -> int:
    """Slots per expert for a batch of ``n_tokens``: ``ceil(factor * N * k / E)`` capped at
    ``N`` (no expert takes a token twice); ``N`` when ``factor`` is None (dropless)."""
    if factor is None:
        return n_tokens
    return max(1, min(n_tokens, math.ceil(factor * n_tokens * k / n_experts)))


class MoE(nn.Module):
    """Mixture of SwiGLU experts (see the module docstring for the options).

    ``forward`` returns ``(y, aux_loss, z_loss)``. In training mode it also counts, per
    expert, the assignments the router made (``tokens_per_expert``, used by the bias update
    and reported as the expert load) and the assignments dropped at capacity.
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        from model.model import SwiGLU  # the dense feed-forward, reused for shared experts

        E, d, f = cfg.n_experts, cfg.d_model, cfg.moe_d_ff
        self.n_experts = E
        self.top_k = cfg.experts_per_token
        self.balance = cfg.router_balance
        self.routing = cfg.moe_routing
        self.score = cfg.router_score
        self.capacity_factor = cfg.moe_capacity_factor
        if self.routing == "expert_choice" and self.capacity_factor is None:
            self.capacity_factor = 1.0
        self.bias_update_rate = cfg.bias_update_rate
        self.norm_topk_prob = cfg.norm_topk_prob
        self.use_grouped_mm = cfg.grouped_mm and hasattr(torch, "_grouped_mm")
        self.router = nn.Linear(d, E, bias=False)
        self.w13 = nn.Parameter(torch.empty(E, d, 2 * f))  # x @ w13[e] -> [gate | up]
        self.w2 = nn.Parameter(torch.empty(E, f, d))
        self.shared = SwiGLU(d, cfg.n_shared_experts * f) if cfg.n_shared_experts else None
        # Balancing bias (DeepSeek-V3) and the running count of assignments per expert since
        # the last :meth:`update_bias`; both persistent so that a resumed run matches exactly.
        self.register_buffer("expert_bias", torch.zeros(E))
        self.register_buffer("tokens_per_expert", torch.zeros(E))
        # [dropped, routed] assignments since the last read (logging only; zero at each step
        # boundary, so not checkpointed).
        self.register_buffer("drop_counts", torch.zeros(2), persistent=False)
        self.reset_parameters(cfg.init_std)

    @torch.no_grad()
    def reset_parameters(self, std: float = 0.02) -> None:
        """Normal(0, std) experts and router (the Transformer rescales ``w2`` afterwards)."""
        for p in (self.w13, self.w2, self.router.weight):
            nn.init.normal_(p, 0.0, std)

    # ---- routing ---------------------------------------------------------------------------
    def _scores(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Router logits and scores ``[N, E]`` in float32."""
        with torch.autocast(device_type=x.device.type, enabled=False):
            logits = F.linear(x.float(), self.router.weight.float())
        scores = logits.sigmoid() if self.score == "sigmoid" else logits.softmax(dim=-1)
        return logits, scores

    def route(self, x: torch.Tensor) -> RouterOutput:
        """Token-choice routing of ``x`` ``[N, d]`` in float32, with the balancing losses."""
        N, E, k = x.shape[0], self.n_experts, self.top_k
        logits, scores = self._scores(x)
        select = scores + self.expert_bias if self.balance == "bias" else scores
        expert_idx = top_k_indices(select, k)
        weights = scores.gather(-1, expert_idx)
        if self.norm_topk_prob:
            weights = weights / weights.sum(dim=-1, keepdim=True)
        # a sum of one-hot rows (bool), not a scatter_add: N * k atomic adds into E
        # counters serialise on the GPU
        experts = torch.arange(E, device=x.device)
        counts = (expert_idx.reshape(-1, 1) == experts).sum(dim=0).float()
        f = counts / (N * k)
        p = scores if self.score == "softmax" else scores / scores.sum(-1, keepdim=True)
        aux_loss = E * (f * p.mean(dim=0)).sum()
        z_loss = torch.logsumexp(logits, dim=-1).pow(2).mean()
        return RouterOutput(expert_idx, weights, scores, logits, counts, aux_loss, z_loss)

    # ---- expert computation ----------------------------------------------------------------
    def _expert_mlp(self, xs: torch.Tensor, counts: torch.Tensor,
                    cap: int | None = None) -> torch.Tensor:
        """SwiGLU of each expert over its contiguous row group of ``xs`` ``[P, d]`` (rows
        sorted by expert, ``counts[e]`` rows for expert ``e``, at most ``cap``, default
        ``P``). bf16 with ``use_grouped_mm``: one grouped GEMM per projection; otherwise the
        static padded path with ``cap`` slots per expert."""
        dtype, P = xs.dtype, xs.shape[0]
        if self.use_grouped_mm and dtype == torch.bfloat16:
            w13, w2 = cast_saved(self.w13, dtype), cast_saved(self.w2, dtype)
            offs = counts.cumsum(0).to(torch.int32)
            h = torch._grouped_mm(xs, w13, offs=offs)
            gate, up = h.chunk(2, dim=-1)
            return torch._grouped_mm((F.silu(gate) * up).contiguous(), w2, offs=offs)
        expert = torch.repeat_interleave(
            torch.arange(self.n_experts, device=xs.device), counts.long(), output_size=P)
        cap = P if cap is None else cap
        slot, _ = self._slots(expert, counts, cap)
        return self._padded_mlp(xs, slot, cap)

    def _slots(self, expert: torch.Tensor, counts: torch.Tensor,
               cap: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Buffer row of each sorted pair (``expert`` ``[P]``, ascending) in a static
        ``[E * cap + 1]`` buffer, and whether it is kept: pairs past their expert's ``cap``-th
        go to the last (dump) row."""
        starts = (counts.cumsum(0) - counts).long()
        pos = torch.arange(expert.shape[0], device=expert.device) - starts[expert]
        keep = pos < cap
        return torch.where(keep, expert * cap + pos, self.n_experts * cap), keep

    def _padded_mlp(self, xs: torch.Tensor, slot: torch.Tensor, cap: int) -> torch.Tensor:
        """Rows ``xs`` ``[P, d]`` through their experts with batched matmuls over the
        ``[E, cap, d]`` buffer the ``slot``s (:meth:`_slots`) address; dropped rows come back
        as zeros. Returns ``[P, d]``."""
        E, d = self.n_experts, xs.shape[1]
        buf = xs.new_zeros(E * cap + 1, d).scatter(0, slot[:, None].expand(-1, d), xs)
        out = self._batched_mlp(buf[:-1].view(E, cap, d))
        out = torch.cat([out.reshape(E * cap, d), out.new_zeros(1, d)])
        return out.index_select(0, slot)  # backward: index_add, no sort

    def _batched_mlp(self, buf: torch.Tensor) -> torch.Tensor:
        """Expert ``e``'s SwiGLU over ``buf[e]`` for every ``e`` (``buf`` ``[E, C, d]``)."""
        dtype = buf.dtype
        gate, up = torch.bmm(buf, cast_saved(self.w13, dtype)).chunk(2, dim=-1)
        return torch.bmm(F.silu(gate) * up, cast_saved(self.w2, dtype))

    def _token_choice(self, x: torch.Tensor, dtype: torch.dtype
                      ) -> tuple[torch.Tensor, RouterOutput, torch.Tensor]:
        """Routed output ``[N, d]`` float32, the router output and the dropped count."""
        N, k = x.shape[0], self.top_k
        r = self.route(x)
        flat = r.expert_idx.reshape(-1)  # [N*k], pair j = (token j // k, expert flat[j])
        # pairs sorted by expert, token order within one; on 8-bit keys when the expert ids
        # fit, one radix-sort pass where int64 keys take eight
        keys = flat.to(torch.uint8 if self.n_experts <= 256 else torch.int32)
        order = keys.argsort(stable=True)
        inverse = torch.empty_like(order).scatter_(
            0, order, torch.arange(order.numel(), device=order.device))
        xs = _SortPairs.apply(x.to(dtype), order, inverse, k)
        weights = r.weights
        if self.capacity_factor is None or not self.training:  # dropless: <= N per expert
            ys = self._expert_mlp(xs, r.counts, cap=N)
            dropped = x.new_zeros((), dtype=torch.float32)
        else:
            cap = capacity(N, self.capacity_factor, k, self.n_experts)
            slot, keep = self._slots(flat[order], r.counts, cap)
            ys = self._padded_mlp(xs, slot, cap)
            weights = weights * keep[inverse].view(N, k)
            dropped = (~keep).sum().float()
        ys = _PermuteRows.apply(ys, inverse, order).view(N, k, -1)  # back to pair order
        y = (ys.float() * weights.unsqueeze(-1)).sum(dim=1)
        return y, r, dropped

    def _expert_choice(self, x: torch.Tensor, dtype: torch.dtype
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Expert-choice output ``[N, d]`` float32, per-expert counts, z-loss and the number
        of tokens no expert took."""
        N, E = x.shape[0], self.n_experts
        logits, scores = self._scores(x)
        cap = capacity(N, self.capacity_factor, self.top_k, E)
        gates, tok = scores.t().topk(cap, dim=-1)  # [E, cap] each expert's chosen tokens
        flat = tok.reshape(-1)
        out = self._batched_mlp(x.to(dtype).index_select(0, flat).view(E, cap, -1))
        y = x.new_zeros(N, x.shape[-1], dtype=torch.float32).index_add(
            0, flat, (out.float() * gates.unsqueeze(-1)).reshape(E * cap, -1))
        taken = torch.zeros(N, device=x.device).index_add(
            0, flat, torch.ones(E * cap, device=x.device))
        dropped = (taken == 0).sum().float()
        counts = torch.full((E,), float(cap), device=x.device)
        z_loss = torch.logsumexp(logits, dim=-1).pow(2).mean()
        return y, counts, z_loss, dropped

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Return ``(y, aux_loss, z_loss)`` for ``x`` ``[B, T, d]``."""
        shape = x.shape
        x = x.reshape(-1, shape[-1])
        N = x.shape[0]
        dtype = autocast_dtype(x.device.type) or x.dtype
        if self.routing == "expert_choice":
            y, counts, z_loss, dropped = self._expert_choice(x, dtype)
            aux_loss, routed = z_loss.new_zeros(()), N
        else:
            y, r, dropped = self._token_choice(x, dtype)
            counts, aux_loss, z_loss, routed = r.counts, r.aux_loss, r.z_loss, N * self.top_k
        if self.training:
            with torch.no_grad():
                self.tokens_per_expert.add_(counts)
                self.drop_counts.add_(torch.stack([dropped.float(),
                                                   dropped.new_full((), float(routed))]))
        y = y.to(x.dtype)
        if self.shared is not None:
            y = y + self.shared(x)
        return y.view(shape), aux_loss, z_loss

    @torch.no_grad()
    def reset_counts(self) -> None:
        """Zero the routing counters (assignments per expert, dropped and routed pairs)."""
        self.tokens_per_expert.zero_()
        self.drop_counts.zero_()

    @torch.no_grad()
    def update_bias(self, counts: torch.Tensor, keep: torch.Tensor | None = None) -> None:
        """Aux-loss-free balancing step: raise the bias of under-loaded experts, lower others
        (no change without counts, where every sign is 0, or where the device flag ``keep``
        is 0: a skipped step). Never reads a device value on the host."""
        if self.balance == "bias":
            step = self.bias_update_rate * torch.sign(counts.mean() - counts)
            self.expert_bias.add_(step if keep is None else step * keep)


@torch.no_grad()
def consume_moe_stats(layers: list[MoE], all_reduce: Any = None,
                      keep: torch.Tensor | None = None) -> MoEStats | None:
    """Expert load and dropped fraction per layer since the last call; resets the counters.

    Sums the counters over data-parallel ranks with ``all_reduce`` (an in-place SUM callable)
    when given, in one collective, and applies the aux-loss-free bias update
    (``router_balance == "bias"``) unless the device flag ``keep`` is 0 (a skipped,
    non-finite step). None when there are no MoE layers.
    """
    if not layers:
        return None
    stats = torch.stack([torch.cat([m.tokens_per_expert, m.drop_counts]) for m in layers])
    if all_reduce is not None:
        all_reduce(stats)
    counts, drops = stats[:, :-2], stats[:, -2:]
    for m, c in zip(layers, counts, strict=True):
        m.update_bias(c, keep)
        m.reset_counts()
    load = counts / counts.sum(dim=-1, keepdim=True).clamp_min(1)
    return MoEStats(load, drops[:, 0] / drops[:, 1].clamp_min(1))
