"""Tests of model/rope.py: the fused-projection rotation and its one-pass backward equal the
rotation of split queries and keys left to autograd (CPU; the Triton kernel on CUDA, marked
``gpu``)."""

from __future__ import annotations

import pytest
import torch

from model.rope import apply_rope, rope_qkv, rope_tables

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def _unfused(qkv: torch.Tensor, H: int, KV: int, D: int, cos: torch.Tensor,
             sin: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Split, view and rotate as the attention did before ``rope_qkv``."""
    B, T, _ = qkv.shape
    q, k, v = qkv.split([H * D, KV * D, KV * D], dim=-1)
    return (apply_rope(q.view(B, T, H, D), cos, sin), apply_rope(k.view(B, T, KV, D), cos, sin),
            v.view(B, T, KV, D))


def _grads(fn, qkv: torch.Tensor, upstream: list[torch.Tensor]):
    """Outputs of ``fn(qkv)`` and the gradient of ``qkv`` for the given output gradients."""
    x = qkv.detach().clone().requires_grad_()
    outs = fn(x)
    torch.autograd.backward(outs, upstream)
    return outs, x.grad


@pytest.mark.parametrize("H,KV,D,dtype", [(4, 4, 8, torch.float32), (4, 2, 64, torch.bfloat16),
                                          (3, 1, 6, torch.float32)])
def test_rope_qkv_equals_split_rotation_and_its_autograd_gradient(H: int, KV: int, D: int,
                                                                  dtype: torch.dtype):
    B, T = 2, 11
    cos, sin = rope_tables(D, T, 10000.0)
    qkv = torch.randn(B, T, (H + 2 * KV) * D, dtype=dtype)
    up = [torch.randn(B, T, n, D, dtype=dtype) for n in (H, KV, KV)]
    fused, g_fused = _grads(lambda x: rope_qkv(x, H, KV, D, cos, sin), qkv, up)
    ref, g_ref = _grads(lambda x: _unfused(x, H, KV, D, cos, sin), qkv, up)
    for a, b in zip(fused, ref, strict=True):
        assert torch.equal(a, b)
    assert torch.equal(g_fused, g_ref)
    assert not g_fused.isnan().any() and g_fused.abs().sum() > 0


def test_inverse_rotation_undoes_the_rotation():
    cos, sin = rope_tables(16, 9, 500.0)
    x = torch.randn(2, 9, 3, 16, dtype=torch.float64)
    back = apply_rope(apply_rope(x, cos, sin), cos, sin, inverse=True)
    torch.testing.assert_close(back, x, rtol=1e-6, atol=1e-6)
    assert not torch.allclose(apply_rope(x, cos, sin), x)  # positions > 0 do move


@pytest.mark.gpu
@cuda
@pytest.mark.parametrize("H,KV,D", [(16, 16, 64), (12, 4, 64), (6, 2, 96)])
def test_gpu_triton_backward_matches_autograd_eager_and_compiled(H: int, KV: int, D: int):
    import model.rope as rope

    if not rope.TRITON_KERNEL:
        pytest.skip("Triton or torch.library.triton_op (torch >= 2.6) missing: PyTorch path")
    torch._dynamo.reset()  # head counts are constants of a model: a fresh compile per shape
    B, T = 3, 257
    cos, sin = (t.cuda() for t in rope_tables(D, T, 10000.0))
    qkv = torch.randn(B, T, (H + 2 * KV) * D, device="cuda", dtype=torch.bfloat16)
    up = [torch.randn(B, T, n, D, device="cuda", dtype=torch.bfloat16) for n in (H, KV, KV)]
    _, g_ref = _grads(lambda x: _unfused(x, H, KV, D, cos, sin), qkv, up)
    fused = lambda x: rope_qkv(x, H, KV, D, cos, sin)  # noqa: E731
    for fn in (fused, torch.compile(fused, fullgraph=True)):
        _, g = _grads(fn, qkv, up)
        # the kernel rounds once from float32, as autograd's path does; FMA contraction may
        # move a value by one bf16 step
        torch.testing.assert_close(g.float(), g_ref.float(), rtol=1e-2, atol=1e-2)
        assert (g != g_ref).float().mean() < 0.01


@pytest.mark.gpu
@cuda
def test_gpu_compiled_rope_qkv_with_dynamic_batch_and_length():
    """Batch and sequence length vary between calls (evaluation, prompts): from the second
    shape on, dynamo recompiles with them as symbolic sizes (automatic dynamic shapes)."""
    torch._dynamo.reset()
    H, KV, D = 8, 2, 64
    fn = torch.compile(lambda x, c, s: rope_qkv(x, H, KV, D, c, s), fullgraph=True)
    for B, T in ((2, 128), (3, 200), (1, 77)):
        cos, sin = (t.cuda() for t in rope_tables(D, T, 10000.0))
        qkv = torch.randn(B, T, (H + 2 * KV) * D, device="cuda", dtype=torch.bfloat16)
        up = [torch.randn(B, T, n, D, device="cuda", dtype=torch.bfloat16) for n in (H, KV, KV)]
        _, g = _grads(lambda x, c=cos, s=sin: fn(x, c, s), qkv, up)
        _, g_ref = _grads(lambda x, c=cos, s=sin: _unfused(x, H, KV, D, c, s), qkv, up)
        torch.testing.assert_close(g.float(), g_ref.float(), rtol=1e-2, atol=1e-2)
