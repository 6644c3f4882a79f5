"""Attention options on FlexAttention against the dense-mask reference (model/attention.py).

CPU: FlexAttention runs eagerly there (forward only), so the block-mask / score_mod path is
checked against the dense masks on the same weights, and both against attention written out
head by head. The ``gpu`` tests run the compiled kernels (eager model, compiled model, and
gradients) against the dense path.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch

from model import ModelConfig, Transformer
from model.attention import FlexMask, KVCache, dense_mask, static_block_mask

pytestmark = [pytest.mark.usefixtures("seed_and_one_thread"),
              pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")]

OPTIONS = {
    "causal": {},
    "alibi": {"pos_encoding": "alibi"},
    "sliding": {"sliding_window": 5},
    "sliding-layer1": {"sliding_window": 4, "sliding_window_layers": [1]},
    "alibi-sliding": {"pos_encoding": "alibi", "sliding_window": 6},
    "softcap": {"attn_logit_softcap": 1.5},
    "mqa-alibi-softcap": {"pos_encoding": "alibi", "n_kv_heads": 1, "attn_logit_softcap": 3.0},
}


def _docs(B: int, T: int, seed: int = 0) -> torch.Tensor:
    """Document ids ``[B, T]`` with a few random boundaries per row (row 0 also one token)."""
    g = torch.Generator().manual_seed(seed)
    starts = torch.rand(B, T, generator=g) < 0.12
    starts[0, 9] = starts[0, 10] = True  # a one-token document
    return torch.cumsum(starts, dim=1)


def _reference_layer(attn, x: torch.Tensor, doc_ids: torch.Tensor | None) -> torch.Tensor:
    """The attention layer written out per batch row and head, options applied by hand."""
    B, T, _ = x.shape
    H, KV, D = attn.n_heads, attn.n_kv_heads, attn.head_dim
    q, k, v = attn.wqkv(x).split([H * D, KV * D, KV * D], dim=-1)
    q, k, v = q.view(B, T, H, D), k.view(B, T, KV, D), v.view(B, T, KV, D)
    out = torch.zeros(B, T, H, D)
    j = torch.arange(T)
    for b in range(B):
        for i in range(T):
            seen = [jj <= i and (attn.window is None or i - jj < attn.window)
                    and (doc_ids is None or bool(doc_ids[b, i] == doc_ids[b, jj]))
                    for jj in range(T)]
            for h in range(H):
                kv = h * KV // H
                s = k[b, :, kv] @ q[b, i, h] / math.sqrt(D)  # [T] scores of query i
                if attn.softcap is not None:
                    s = attn.softcap * torch.tanh(s / attn.softcap)
                if attn.alibi_slopes is not None:
                    s = s - float(attn.alibi_slopes[h]) * (i - j)
                s = s.masked_fill(~torch.tensor(seen), float("-inf"))
                out[b, i, h] = s.softmax(-1) @ v[b, :, kv]
    return attn.wo(out.reshape(B, T, H * D))


@pytest.mark.parametrize("docs", [False, True], ids=["no-docs", "docs"])
@pytest.mark.parametrize("name", list(OPTIONS))
def test_flex_path_equals_dense_reference(name, docs, tiny: Callable):
    model = Transformer(tiny(init_std=0.2, **OPTIONS[name])).eval()
    B, T = 2, 40
    idx = torch.randint(0, 97, (B, T))
    doc_ids = _docs(B, T) if docs else None
    flex = model.attention_mask(T, doc_ids, impl="flex")
    dense = model.attention_mask(T, doc_ids, impl="sdpa")
    if name == "causal" and not docs:
        assert flex is None and dense is None  # plain causal stays on SDPA
    else:
        assert isinstance(flex, FlexMask) and flex.documents == docs
    with torch.no_grad():
        got, want = model(idx, attn_mask=flex), model(idx, attn_mask=dense)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    if docs or name != "causal":  # the option changes the output
        with torch.no_grad():
            assert not torch.allclose(want, Transformer(tiny(init_std=0.2)).eval()(idx))


@pytest.mark.parametrize("name", ["alibi-sliding", "mqa-alibi-softcap"])
def test_both_paths_equal_attention_written_out(name, tiny: Callable):
    cfg = tiny(init_std=0.3, **OPTIONS[name])
    model = Transformer(cfg).eval()
    attn = model.layers[0].attn
    B, T = 2, 19
    x = torch.randn(B, T, cfg.d_model)
    doc_ids = _docs(B, T, seed=3)
    with torch.no_grad():
        ref = _reference_layer(attn, x, doc_ids)
        for impl in ("flex", "sdpa"):
            got = attn(x, None, None, model.attention_mask(T, doc_ids, impl=impl))
            torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-5)
        # Without documents (no mask given): the layer's own masks.
        ref = _reference_layer(attn, x, None)
        torch.testing.assert_close(attn(x, None, None), ref, rtol=1e-4, atol=1e-5)
        flex = model.attention_mask(T, impl="flex")
        torch.testing.assert_close(attn(x, None, None, flex), ref, rtol=1e-4, atol=1e-5)


def test_block_masks_are_cached_sparse_and_per_window(tiny: Callable):
    cpu = torch.device("cpu")
    assert static_block_mask(1024, 128, cpu) is static_block_mask(1024, 128, cpu)
    assert static_block_mask(1024, 128, cpu) is not static_block_mask(1024, 64, cpu)
    assert static_block_mask(1024, None, cpu) is not static_block_mask(512, None, cpu)
    # Causal skips the blocks above the diagonal, a 128-token window all but two per row.
    causal, window = static_block_mask(1024, None, cpu), static_block_mask(1024, 128, cpu)
    assert causal.sparsity() == pytest.approx(100 * (1 - 36 / 64))
    assert window.sparsity() == pytest.approx(100 * (1 - 15 / 64))
    model = Transformer(tiny(n_layers=3, sliding_window=4, sliding_window_layers=[1]))
    no_docs = model.attention_mask(32, impl="flex")
    assert set(no_docs.masks) == {4} and not no_docs.documents  # plain layers stay on SDPA
    doc_ids = _docs(2, 32)
    with_docs = model.attention_mask(32, doc_ids, impl="flex")
    assert set(with_docs.masks) == {None, 4} and with_docs.documents
    assert with_docs.masks[None] is not model.attention_mask(32, doc_ids, impl="flex").masks[None]
    with pytest.raises(ValueError, match="impl"):
        model.attention_mask(32, impl="dense")


def test_small_heads_keep_the_dense_path_on_cuda(tiny: Callable):
    """The CUDA FlexAttention kernel needs head_dim >= 16 (an earlier GPU run of toy models
    failed in inductor): by default such models use the dense masks there, and asking for
    FlexAttention explicitly is refused. Decided before any CUDA tensor is made."""
    model = Transformer(tiny(pos_encoding="alibi"))  # head_dim 8
    assert model.attention_mask(32, device="cuda") is None
    doc_ids = _docs(2, 32)
    assert model.attention_mask(32, doc_ids, device="cuda").dtype == torch.bool
    with pytest.raises(ValueError, match="head_dim >= 16"):
        model.attention_mask(32, impl="flex", device="cuda")
    assert isinstance(model.attention_mask(32, impl="flex"), FlexMask)  # CPU: no limit


def test_dense_mask_with_tensor_position_equals_int_position():
    slopes = torch.tensor([0.5, 0.25])
    for window in (None, 3):
        a = dense_mask(2, 12, 7, window, slopes, None, torch.device("cpu"))
        b = dense_mask(2, 12, torch.tensor(7), window, slopes, None, torch.device("cpu"))
        torch.testing.assert_close(a, b)
        assert a.shape == (1, 2, 2, 12) and bool(torch.isinf(a[0, 0, 0, 8:]).all())


def test_static_cache_writes_at_the_tensor_position_and_reorders(tiny: Callable):
    cfg = tiny(n_layers=1)
    cache = KVCache(cfg, batch_size=3, max_len=8)
    k = torch.randn(3, cfg.n_kv_heads, 2, cfg.head_dim)
    cache.update(0, k, k)
    cache.advance(2)
    pos = cache.make_static()
    assert cache.static and int(pos) == 2
    k2 = torch.randn(3, cfg.n_kv_heads, 1, cfg.head_dim)
    full, _ = cache.update(0, k2, k2)
    assert full.shape[2] == 8 and torch.equal(full[:, :, :2], k) and torch.equal(full[:, :, 2:3], k2)
    cache.advance(1)
    assert int(pos) == 3 and cache.pos is pos  # advanced in place
    cache.reorder(torch.tensor([2, 2, 0, 1]))
    assert torch.equal(cache.k[0][:2], full[[2, 2]]) and cache.k[0].shape[0] == 4


# ---- CUDA ---------------------------------------------------------------------------------------

GPU_OPTIONS = {
    "alibi": ({"pos_encoding": "alibi"}, False),
    "docs": ({}, True),
    "alibi-sliding-docs-gqa": ({"pos_encoding": "alibi", "sliding_window": 64}, True),
    "softcap-sliding-layer": ({"attn_logit_softcap": 2.0, "sliding_window": 80,
                               "sliding_window_layers": [0]}, False),
}


def _gpu_model(kw: dict, tiny: Callable) -> Transformer:
    cfg = tiny(**{"vocab_size": 256, "d_model": 128, "n_heads": 4, "n_kv_heads": 2,
                  "d_ff": 256, "max_seq_len": 512, "init_std": 0.1, **kw})
    return Transformer(cfg).cuda()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", list(GPU_OPTIONS))
def test_gpu_flex_kernels_equal_dense_reference_with_gradients(name, monkeypatch,
                                                               tiny: Callable):
    """Eager model on CUDA (float32, TF32 off): the default path goes through the compiled
    FlexAttention kernel and gives the dense path's loss, logits and gradients."""
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    kw, docs = GPU_OPTIONS[name]
    model = _gpu_model(kw, tiny)
    B, T = 2, 300  # not a multiple of the 128-token block
    idx = torch.randint(0, 256, (B, T + 1), device="cuda")
    doc_ids = _docs(B, T).cuda() if docs else None
    assert isinstance(model.attention_mask(T, doc_ids), FlexMask)  # default impl on CUDA

    def run(mask):
        model.zero_grad(set_to_none=True)
        out = model(idx[:, :-1], idx[:, 1:], doc_ids=doc_ids, attn_mask=mask)
        out.loss.backward()
        return out.logits.detach(), [p.grad.clone() for p in model.parameters()]

    flex_logits, flex_grads = run(None)
    dense_logits, dense_grads = run(model.attention_mask(T, doc_ids, impl="sdpa"))
    rel = ((flex_logits - dense_logits).norm() / dense_logits.norm()).item()
    assert rel < 5e-3, f"logits differ: {rel:.2e}"  # a wrong mask or bias gives > 0.1
    for a, b in zip(flex_grads, dense_grads, strict=True):
        assert (a - b).norm() <= 2e-2 * b.norm() + 1e-7


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_gpu_compiled_model_builds_block_masks_in_graph(tiny: Callable):
    """torch.compile over the whole model (block masks traced into the graph), bf16 autocast,
    against the eager dense path; gradients flow."""
    model = _gpu_model({"pos_encoding": "alibi", "sliding_window": 100,
                        "sliding_window_layers": [1]}, tiny)
    idx = torch.randint(0, 256, (2, 257), device="cuda")
    compiled = torch.compile(model)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out = compiled(idx[:, :-1], idx[:, 1:])
        with torch.no_grad():
            dense = model(idx[:, :-1], attn_mask=model.attention_mask(256, impl="sdpa"))
            full = Transformer(ModelConfig.from_dict({**model.config.to_dict(),
                                                      "sliding_window": None,
                                                      "sliding_window_layers": None})).cuda()
            full.load_state_dict(model.state_dict())
            no_window = full(idx[:, :-1])
    out.loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    got, want = out.logits.float(), dense.float()
    assert (got - want).norm() / want.norm() < 3e-2
    assert (got - want).norm() < 0.5 * (no_window.float() - want).norm()  # the window matters
