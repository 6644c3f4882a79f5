"""Rotary position embeddings (RoPE): tables, the rotation, and the rotation of a fused QKV
projection with a one-pass backward.

:func:`rope_qkv` takes the ``[B, T, (H + 2 KV) * D]`` output of the attention's QKV
projection and returns rotated queries and keys and the values as ``[B, T, heads, D]``
tensors. Its forward is :func:`apply_rope` (float32 math, result in the input dtype). Its
backward writes the projection's gradient in one pass: on CUDA a Triton kernel reads the three
gradients row by row, applies the inverse rotation to the query and key parts and stores the
whole ``[B, T, (H + 2 KV) * D]`` row. Left to autograd and ``torch.compile``, the same gradient
took one fused 1-D elementwise kernel running at about 1.3 TB/s, the largest elementwise kernel
of a training step (``benchmarks/RESULTS.md``). Without Triton (CPU) the backward is the same
math in PyTorch ops.

No ``from __future__ import annotations`` here: ``torch.library`` reads the custom op's
signature from its annotations.
"""

import torch

try:  # Triton ships with PyTorch's CUDA builds; CPU-only installs use the PyTorch path
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - depends on the install
    triton = None

# the custom-op API the kernel is registered with (torch >= 2.6)
TRITON_KERNEL = (triton is not None and hasattr(torch.library, "triton_op")
                 and hasattr(torch.library, "wrap_triton"))


def rope_tables(head_dim: int, max_seq_len: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Cosine and sine tables ``[max_seq_len, head_dim // 2]`` for rotary embeddings."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim))
    t = torch.arange(max_seq_len, dtype=torch.float64)
    freqs = torch.outer(t, inv_freq)
    return freqs.cos().float(), freqs.sin().float()


def split_qkv(qkv: torch.Tensor, n_heads: int, n_kv_heads: int, head_dim: int
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Views of the fused projection ``qkv`` ``[B, T, (H + 2 KV) * D]``: queries
    ``[B, T, H, D]``, keys and values ``[B, T, KV, D]``."""
    B, T, _ = qkv.shape
    H, KV, D = n_heads, n_kv_heads, head_dim
    q, k, v = qkv.split([H * D, KV * D, KV * D], dim=-1)
    return q.view(B, T, H, D), k.view(B, T, KV, D), v.view(B, T, KV, D)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
               inverse: bool = False) -> torch.Tensor:
    """Rotate ``x`` of shape ``[B, T, H, D]`` by position (half-split / "rotate_half" layout).

    Pairs ``(x[i], x[i + D/2])`` are rotated by angle ``pos * theta**(-2i/D)``, so the dot
    product of a rotated query and key depends only on their relative position. ``cos``/``sin``
    are ``[T, D / 2]`` rows of :func:`rope_tables`; the math is float32 and the result has
    ``x``'s dtype. ``inverse`` rotates by the negative angle (the rotation's gradient).
    """
    d2 = x.shape[-1] // 2
    xf = x.float()
    x1, x2 = xf[..., :d2], xf[..., d2:]
    c = cos[None, :, None, :]
    s = -sin[None, :, None, :] if inverse else sin[None, :, None, :]
    return torch.cat([x1 * c - x2 * s, x2 * c + x1 * s], dim=-1).type_as(x)


def _backward_torch(dq: torch.Tensor, dk: torch.Tensor, dv: torch.Tensor, cos: torch.Tensor,
                    sin: torch.Tensor) -> torch.Tensor:
    """The projection's gradient ``[B, T, (H + 2 KV) * D]`` in PyTorch ops."""
    B, T = dq.shape[:2]
    return torch.cat([apply_rope(dq, cos, sin, inverse=True).reshape(B, T, -1),
                      apply_rope(dk, cos, sin, inverse=True).reshape(B, T, -1),
                      dv.reshape(B, T, -1)], dim=-1)


if TRITON_KERNEL:
    @triton.jit
    def _unrotate_rows(src, dst, c, s, H: tl.constexpr, D2: tl.constexpr,
                       HP: tl.constexpr, D2P: tl.constexpr):
        """Inverse-rotate one row of ``H`` heads (``src``, ``[H, 2 * D2]`` contiguous) into
        ``dst`` (same layout)."""
        h = tl.arange(0, HP)[:, None]
        d = tl.arange(0, D2P)[None, :]
        m = (h < H) & (d < D2)
        off = h * (2 * D2) + d
        g1 = tl.load(src + off, mask=m, other=0.0).to(tl.float32)
        g2 = tl.load(src + off + D2, mask=m, other=0.0).to(tl.float32)
        out_ty = dst.dtype.element_ty
        tl.store(dst + off, (g1 * c + g2 * s).to(out_ty), mask=m)
        tl.store(dst + off + D2, (g2 * c - g1 * s).to(out_ty), mask=m)

    @triton.jit
    def _rope_qkv_backward_kernel(dq, dk, dv, cos, sin, out, T,
                                  H: tl.constexpr, KV: tl.constexpr, D2: tl.constexpr,
                                  HP: tl.constexpr, KVP: tl.constexpr, D2P: tl.constexpr,
                                  VP: tl.constexpr):
        row = tl.program_id(0).to(tl.int64)  # b * T + t
        t = row % T
        d = tl.arange(0, D2P)
        c = tl.load(cos + t * D2 + d, mask=d < D2, other=0.0)[None, :]
        s = tl.load(sin + t * D2 + d, mask=d < D2, other=0.0)[None, :]
        width = (H + 2 * KV) * 2 * D2
        o = out + row * width
        _unrotate_rows(dq + row * (H * 2 * D2), o, c, s, H, D2, HP, D2P)
        _unrotate_rows(dk + row * (KV * 2 * D2), o + H * 2 * D2, c, s, KV, D2, KVP, D2P)
        j = tl.arange(0, VP)
        mv = j < KV * 2 * D2
        tl.store(o + (H + KV) * 2 * D2 + j,
                 tl.load(dv + row * (KV * 2 * D2) + j, mask=mv, other=0.0), mask=mv)

    @torch.library.triton_op("refinery::rope_qkv_backward", mutates_args=())
    def _backward_triton(dq: torch.Tensor, dk: torch.Tensor, dv: torch.Tensor,
                         cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        """The projection's gradient ``[B, T, (H + 2 KV) * D]`` from contiguous
        ``[B, T, heads, D]`` gradients, one Triton program per token."""
        B, T, H, D = dq.shape
        KV = dk.shape[2]
        H, KV, D = int(H), int(KV), int(D)  # Triton constants: fixed even if traced symbolic
        out = dq.new_empty(B, T, (H + 2 * KV) * D)
        np2 = triton.next_power_of_2
        torch.library.wrap_triton(_rope_qkv_backward_kernel)[(B * T,)](
            dq, dk, dv, cos, sin, out, T, H=H, KV=KV, D2=D // 2, HP=np2(H), KVP=np2(KV),
            D2P=np2(D // 2), VP=np2(KV * D), num_warps=4)
        return out


class _RopeQKV(torch.autograd.Function):
    """Rotated queries and keys and the values from the fused projection ``qkv``."""

    @staticmethod
    def forward(ctx, qkv: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, H: int, KV: int,
                D: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        q, k, v = split_qkv(qkv, H, KV, D)
        ctx.save_for_backward(cos, sin)
        # the values are copied: outputs that alias the input would take their gradient
        # through a second kernel that writes into the projection's gradient
        return apply_rope(q, cos, sin), apply_rope(k, cos, sin), v.clone()

    @staticmethod
    def backward(ctx, dq: torch.Tensor, dk: torch.Tensor, dv: torch.Tensor
                 ) -> tuple[torch.Tensor, None, None, None, None, None]:
        cos, sin = ctx.saved_tensors
        dq, dk, dv = dq.contiguous(), dk.contiguous(), dv.contiguous()
        if TRITON_KERNEL and dq.is_cuda:
            dqkv = _backward_triton(dq, dk, dv, cos.contiguous(), sin.contiguous())
        else:
            dqkv = _backward_torch(dq, dk, dv, cos, sin)
        return dqkv, None, None, None, None, None


def rope_qkv(qkv: torch.Tensor, n_heads: int, n_kv_heads: int, head_dim: int,
             cos: torch.Tensor, sin: torch.Tensor
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Split the projection ``qkv`` ``[B, T, (H + 2 KV) * D]`` into queries ``[B, T, H, D]``,
    keys and values ``[B, T, KV, D]``, queries and keys rotated by ``cos``/``sin``
    (``[T, D / 2]`` float32 tables at the tokens' positions)."""
    return _RopeQKV.apply(qkv, cos, sin, n_heads, n_kv_heads, head_dim)
