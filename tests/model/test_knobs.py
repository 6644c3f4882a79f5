"""Architecture knobs of model/model.py: each trains, and each changes what it should (CPU)."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F

from model import ModelConfig, Transformer
from model.model import alibi_slopes, deepnorm_constants, sinusoidal_table

# a seeded, one-thread torch for every test here (tests/model/conftest.py)
pytestmark = pytest.mark.usefixtures("seed_and_one_thread")

KNOBS = [
    {"norm_placement": "post"}, {"norm_placement": "sandwich"}, {"norm_placement": "deepnorm"},
    {"norm_type": "layernorm"}, {"pos_encoding": "alibi"}, {"pos_encoding": "learned"},
    {"pos_encoding": "sinusoidal"}, {"pos_encoding": "none"}, {"output_z_loss_coef": 1e-3},
    {"qk_norm": True}, {"attn_logit_softcap": 20.0, "final_logit_softcap": 15.0},
    {"sliding_window": 4, "sliding_window_layers": [1]},
]


@pytest.mark.parametrize("kw", KNOBS, ids=lambda kw: ",".join(f"{k}={v}" for k, v in kw.items()))
def test_tiny_model_with_knob_trains(kw, tiny: Callable):
    model = Transformer(tiny(**kw))
    idx = torch.randint(0, 97, (4, 17))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(40):
        out = model(idx[:, :-1], idx[:, 1:])
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        losses.append(out.ce_loss.item())
    assert losses[0] > 4.0 and losses[-1] < 0.5 * losses[0]


def test_bf16_residual_changes_only_the_autocast_residual_dtype(tiny: Callable):
    """``fp32_residual: false``: under bf16 autocast the stream between blocks is bf16 (float32
    by default, and under fp16 autocast); without autocast the two settings compute the same
    logits."""
    torch.manual_seed(0)
    a = Transformer(tiny())
    b = Transformer(tiny(fp32_residual=False))
    b.load_state_dict(a.state_dict())
    idx = torch.randint(0, 97, (2, 17))
    assert torch.equal(a(idx), b(idx))
    seen: dict[str, torch.dtype] = {}
    for name, m in (("fp32", a), ("bf16", b)):
        m.layers[-1].register_forward_hook(
            lambda mod, inp, out, name=name: seen.__setitem__(name, inp[0].dtype))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits = m(idx)
        assert torch.isfinite(logits).all()
    assert seen == {"fp32": torch.float32, "bf16": torch.bfloat16}
    with torch.autocast("cpu", dtype=torch.float16):  # fp16 keeps float32: it would overflow
        b(idx)
    assert seen["bf16"] == torch.float32


def test_bf16_residual_trains_like_fp32_residual_under_autocast(tiny: Callable):
    """The same bf16-autocast training run with either residual dtype memorises the batch and
    ends at nearly the same loss (the bf16 stream rounds each block's sum)."""
    idx = torch.randint(0, 97, (4, 33), generator=torch.Generator().manual_seed(1))
    finals = []
    for fp32 in (True, False):
        torch.manual_seed(0)
        model = Transformer(tiny(fp32_residual=fp32))
        opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
        for _ in range(40):
            with torch.autocast("cpu", dtype=torch.bfloat16):
                out = model(idx[:, :-1], idx[:, 1:])
            opt.zero_grad()
            out.loss.backward()
            opt.step()
        finals.append(out.ce_loss.item())
    assert finals[0] < 0.5 and abs(finals[1] - finals[0]) < 0.05, finals


def _capture_sdpa(monkeypatch) -> list[dict]:
    calls: list[dict] = []
    real = F.scaled_dot_product_attention

    def spy(*args, **kwargs):
        calls.append(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(F, "scaled_dot_product_attention", spy)
    return calls


def test_default_path_is_fused_causal_attention(monkeypatch, tiny: Callable):
    calls = _capture_sdpa(monkeypatch)
    Transformer(tiny())(torch.randint(0, 97, (2, 8)))
    assert len(calls) == 2 and all(c.get("is_causal") and "attn_mask" not in c for c in calls)
    calls.clear()
    Transformer(tiny(sliding_window=3, sliding_window_layers=[1]))(torch.randint(0, 97, (2, 8)))
    assert calls[0].get("is_causal") and calls[1]["attn_mask"].dtype == torch.bool


# ---- normalisation ----------------------------------------------------------------------------


def test_deepnorm_constants_residual_scale_and_init(tiny: Callable):
    for n in (1, 6, 24):  # DeepNet table 1, decoder-only: alpha = (2N)^(1/4), beta = (8N)^(-1/4)
        alpha, beta = deepnorm_constants(n)
        assert alpha == pytest.approx((2 * n) ** 0.25) and beta == pytest.approx((8 * n) ** -0.25)
    assert deepnorm_constants(6) == pytest.approx((12 ** 0.25, 48 ** -0.25))
    cfg = tiny(norm_placement="deepnorm", n_layers=6, d_model=64, d_ff=256, n_heads=4,
               n_kv_heads=4)
    model = Transformer(cfg)
    alpha, beta = deepnorm_constants(6)
    block = model.layers[0]
    assert block.alpha == pytest.approx(alpha)
    x = torch.randn(2, 5, 64)
    with torch.no_grad():
        h = block.attn_norm(alpha * x + block.attn(x, model.rope_cos[:5], model.rope_sin[:5]))
        want = block.ffn_norm(alpha * h + block.ffn(h))
        torch.testing.assert_close(block(x, model.rope_cos[:5], model.rope_sin[:5])[0], want)
    q, k, v = block.attn.wqkv.weight.split(64, dim=0)
    xavier = math.sqrt(2 / (64 + 64))
    for w, gain in ((q, 1.0), (k, 1.0), (v, beta), (block.attn.wo.weight, beta)):
        assert w.std().item() == pytest.approx(gain * xavier, rel=0.1)
    assert block.ffn.w2.weight.std().item() == pytest.approx(beta * math.sqrt(2 / 320), rel=0.1)
    assert isinstance(model.norm, torch.nn.Identity)


def test_post_and_sandwich_blocks_follow_their_formulas(tiny: Callable):
    x = torch.randn(2, 5, 32)
    for placement in ("post", "sandwich"):
        model = Transformer(tiny(norm_placement=placement))
        b = model.layers[0]
        cos, sin = model.rope_cos[:5], model.rope_sin[:5]
        with torch.no_grad():
            if placement == "post":
                h = b.attn_norm(x + b.attn(x, cos, sin))
                want = b.ffn_norm(h + b.ffn(h))
                # post-norm output has unit RMS (gain 1 at init)
                torch.testing.assert_close(want.pow(2).mean(-1), torch.ones(2, 5), atol=1e-4,
                                           rtol=0)
            else:
                b.attn_out_norm.weight.fill_(0.5)
                h = x + b.attn_out_norm(b.attn(b.attn_norm(x), cos, sin))
                want = h + b.ffn_out_norm(b.ffn(b.ffn_norm(h)))
            torch.testing.assert_close(b(x, cos, sin)[0], want)


def test_layernorm_centres_and_rmsnorm_does_not(tiny: Callable):
    ln = Transformer(tiny(norm_type="layernorm")).norm
    rms = Transformer(tiny()).norm
    x = torch.randn(3, 32) + 5.0
    torch.testing.assert_close(ln(x), F.layer_norm(x, (32,)), atol=1e-5, rtol=1e-5)
    assert ln(x).mean(-1).abs().max() < 1e-5
    assert rms(x).mean(-1).abs().min() > 0.5


# ---- position encodings -----------------------------------------------------------------------


def test_alibi_slopes_and_scores_follow_the_formula(tiny: Callable):
    torch.testing.assert_close(alibi_slopes(8), torch.tensor([2.0 ** -i for i in range(1, 9)]))
    # 6 heads: the 4-head slopes, then every other slope of 8 heads (2^-0.5, 2^-1.5).
    want6 = [2.0 ** -2, 2.0 ** -4, 2.0 ** -6, 2.0 ** -8, 2.0 ** -1, 2.0 ** -3]
    torch.testing.assert_close(alibi_slopes(6), torch.tensor(want6))
    model = Transformer(tiny(pos_encoding="alibi", n_heads=4, n_kv_heads=2))
    attn = model.layers[0].attn
    B, T, H, KV, D = 2, 7, 4, 2, 8
    x = torch.randn(B, T, 32)
    q, k, v = attn.wqkv(x).split([H * D, KV * D, KV * D], dim=-1)
    q, k, v = q.view(B, T, H, D), k.view(B, T, KV, D), v.view(B, T, KV, D)
    out = torch.zeros(B, T, H, D)
    i, j = torch.arange(T)[:, None], torch.arange(T)[None]
    for h in range(H):
        m = 2.0 ** (-8.0 * (h + 1) / H)
        s = q[:, :, h] @ k[:, :, h // 2].transpose(1, 2) / math.sqrt(D) - m * (i - j)
        out[:, :, h] = s.masked_fill(j > i, float("-inf")).softmax(-1) @ v[:, :, h // 2]
    with torch.no_grad():
        torch.testing.assert_close(attn(x, None, None), attn.wo(out.reshape(B, T, H * D)))


def _last_logits(model: Transformer, idx: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(idx)[:, -1]


@pytest.mark.parametrize("pos", ["none", "learned", "sinusoidal", "rope", "alibi"])
def test_position_encoding_breaks_order_invariance_except_nope(pos, tiny: Callable):
    """One layer: without positions the last token's output ignores the order of the past."""
    model = Transformer(tiny(pos_encoding=pos, n_layers=1, init_std=0.3)).eval()
    idx = torch.randint(0, 97, (2, 10))
    perm = idx.clone()
    perm[:, :9] = idx[:, torch.randperm(9)]
    diff = (_last_logits(model, idx) - _last_logits(model, perm)).abs().max().item()
    same = diff < 1e-5
    assert same or diff > 1e-3
    assert same == (pos == "none")


def test_sinusoidal_table_and_learned_embedding_are_added(tiny: Callable):
    t = sinusoidal_table(16, 8)
    assert t[3, 2].item() == pytest.approx(math.sin(3 / 10000 ** (2 / 8)), abs=1e-6)
    assert t[3, 3].item() == pytest.approx(math.cos(3 / 10000 ** (2 / 8)), abs=1e-6)
    model = Transformer(tiny(pos_encoding="learned"))
    model(torch.randint(0, 97, (2, 6)), torch.randint(0, 97, (2, 6))).loss.backward()
    assert model.pos_emb.weight.grad[:6].abs().sum() > 0
    assert model.pos_emb.weight.grad[6:].abs().sum() == 0
    assert "rope_cos" not in dict(model.named_buffers())


# ---- sliding window ---------------------------------------------------------------------------


def test_sliding_window_ignores_tokens_outside_the_window(tiny: Callable):
    W, T = 4, 12
    model = Transformer(tiny(n_layers=1, sliding_window=W)).eval()
    idx = torch.randint(0, 97, (2, T))
    outside = idx.clone()
    outside[:, : T - W] = torch.randint(0, 97, (2, T - W))
    inside = idx.clone()
    inside[:, T - W] = (idx[:, T - W] + 1) % 97
    base = _last_logits(model, idx)
    torch.testing.assert_close(_last_logits(model, outside), base, rtol=0, atol=1e-6)
    assert not torch.allclose(_last_logits(model, inside), base)
    full = Transformer(tiny(n_layers=1)).eval()
    full.load_state_dict(model.state_dict())
    assert not torch.allclose(_last_logits(full, outside), _last_logits(full, idx))


def test_sliding_window_only_on_chosen_layers(tiny: Callable):
    cfg = tiny(n_layers=3, sliding_window=8, sliding_window_layers=[0, 2])
    assert [cfg.window_of(i) for i in range(3)] == [8, None, 8]
    model = Transformer(cfg)
    assert [layer.attn.plain for layer in model.layers] == [False, True, False]
    assert tiny(sliding_window=8).window_of(1) == 8
    with pytest.raises(ValueError):
        tiny(sliding_window_layers=[0])
    with pytest.raises(ValueError):
        tiny(sliding_window=4, sliding_window_layers=[5])


def test_sliding_window_and_alibi_combine_with_document_masking(tiny: Callable):
    model = Transformer(tiny(sliding_window=3, pos_encoding="alibi")).eval()
    doc_ids = torch.tensor([[0] * 5 + [1] * 7])
    idx = torch.randint(0, 97, (1, 12))
    with torch.no_grad():
        both = model(idx, doc_ids=doc_ids)
        second = model(idx[:, 5:])
    # ALiBi depends on distance only, so the second document alone gives the same logits.
    torch.testing.assert_close(both[:, 5:], second, atol=1e-5, rtol=1e-5)


# ---- stability --------------------------------------------------------------------------------


def test_output_z_loss_is_added_and_shrinks_the_log_normaliser(tiny: Callable):
    cfg = tiny(output_z_loss_coef=0.1)
    model = Transformer(cfg)
    idx = torch.randint(0, 97, (2, 9))
    y = idx[:, 1:].clone()
    y[0, :3] = -100
    out = model(idx[:, :-1], y)
    scored = out.logits.reshape(-1, 97)[y.reshape(-1) != -100].float()
    z = torch.logsumexp(scored, -1).pow(2).mean()
    torch.testing.assert_close(out.output_z_loss, z)
    torch.testing.assert_close(out.loss, out.ce_loss + 0.1 * z)
    assert Transformer(tiny())(idx[:, :-1], y).output_z_loss == 0

    def final_lse(coef: float) -> float:
        torch.manual_seed(1)
        m = Transformer(tiny(output_z_loss_coef=coef))
        opt = torch.optim.AdamW(m.parameters(), lr=1e-2)
        for _ in range(30):
            o = m(idx[:, :-1], idx[:, 1:])
            opt.zero_grad()
            o.loss.backward()
            opt.step()
        return torch.logsumexp(o.logits.float(), -1).abs().mean().item()

    assert final_lse(1.0) < 0.5 * final_lse(0.0)


def test_soft_caps_bound_logits_and_scores(tiny: Callable):
    model = Transformer(tiny(final_logit_softcap=2.0)).eval()
    with torch.no_grad():
        model.lm_head.weight.mul_(100)
        logits = model(torch.randint(0, 97, (2, 8)))
    assert logits.abs().max() <= 2.0 and logits.abs().max() > 1.9
    # Attention soft-cap: scores -> cap * tanh(scores / cap) before the softmax.
    capped = Transformer(tiny(attn_logit_softcap=0.5, pos_encoding="none")).eval()
    attn = capped.layers[0].attn
    with torch.no_grad():
        attn.wqkv.weight.mul_(10)
    B, T, H, KV, D = 1, 6, 4, 2, 8
    x = torch.randn(B, T, 32)
    q, k, v = attn.wqkv(x).split([H * D, KV * D, KV * D], dim=-1)
    q, k, v = q.view(B, T, H, D), k.view(B, T, KV, D), v.view(B, T, KV, D)
    causal = torch.ones(T, T, dtype=torch.bool).tril()
    outs = {}
    for cap in (0.5, None):
        o = torch.zeros(B, T, H, D)
        for h in range(H):
            s = q[:, :, h] @ k[:, :, h // 2].transpose(1, 2) / math.sqrt(D)
            s = 0.5 * torch.tanh(s / 0.5) if cap else s
            o[:, :, h] = s.masked_fill(~causal, float("-inf")).softmax(-1) @ v[:, :, h // 2]
        outs[cap] = attn.wo(o.reshape(B, T, H * D))
    with torch.no_grad():
        got = attn(x, None, None)
    torch.testing.assert_close(got, outs[0.5], atol=1e-5, rtol=1e-5)
    assert not torch.allclose(got, outs[None], atol=1e-3)


def test_knob_validation(tiny: Callable):
    for bad in ({"norm_placement": "middle"}, {"pos_encoding": "xpos"}, {"norm_type": "batch"},
                {"attn_logit_softcap": 0.0}, {"sliding_window": 0},
                {"pos_encoding": "sinusoidal", "d_model": 33, "n_heads": 3}):
        with pytest.raises(ValueError):
            tiny(**bad)
    ModelConfig(d_model=36, n_heads=4, pos_encoding="alibi")  # odd head_dim is fine without RoPE


# ---- CUDA -------------------------------------------------------------------------------------

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


# Every knob appears in one of these groups (compiling each knob alone would cost minutes).
GPU_KNOB_GROUPS = {
    "default": {},
    "post-layernorm-alibi-qknorm": {"norm_placement": "post", "norm_type": "layernorm",
                                    "pos_encoding": "alibi", "qk_norm": True},
    "sandwich-learned-zloss-softcaps": {"norm_placement": "sandwich", "pos_encoding": "learned",
                                        "output_z_loss_coef": 1e-3, "attn_logit_softcap": 20.0,
                                        "final_logit_softcap": 15.0},
    "deepnorm-sinusoidal-window": {"norm_placement": "deepnorm", "pos_encoding": "sinusoidal",
                                   "sliding_window": 32, "sliding_window_layers": [1, 3]},
    "nope-window": {"pos_encoding": "none", "sliding_window": 32},
    "window-alibi": {"pos_encoding": "alibi", "sliding_window": 32, "sliding_window_layers": [0]},
    "bf16-residual": {"fp32_residual": False},
}


@pytest.mark.gpu
@cuda
@pytest.mark.parametrize("name", GPU_KNOB_GROUPS)
def test_gpu_knob_compiled_bf16_matches_fp32_and_trains(name, monkeypatch):
    """Each option on CUDA: the compiled bf16-autocast forward agrees with the eager float32
    one (the same computation on the GPU kernels), and compiled bf16 training lowers the loss."""
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)  # undone after
    model = Transformer(ModelConfig(vocab_size=512, d_model=256, n_layers=4, n_heads=8,
                                    n_kv_heads=2, d_ff=512, max_seq_len=256,
                                    **GPU_KNOB_GROUPS[name])).cuda()
    idx = torch.randint(0, 512, (4, 257), device="cuda")
    compiled = torch.compile(model)
    with torch.no_grad():
        ref = model(idx[:, :-1]).float()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            low = compiled(idx[:, :-1]).float()
    rel = ((low - ref).norm() / ref.norm()).item()
    assert rel < 3e-2, f"compiled bf16 vs eager fp32: relative error {rel:.4f}"
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(80):  # memorise one fixed batch
        with torch.autocast("cuda", dtype=torch.bfloat16):
            out = compiled(idx[:, :-1], idx[:, 1:])
        opt.zero_grad(set_to_none=True)
        out.loss.backward()
        opt.step()
        losses.append(out.ce_loss.item())
    assert all(math.isfinite(v) for v in losses), losses
    assert losses[-1] < 0.5 * losses[0], f"loss {losses[0]:.3f} -> {losses[-1]:.3f}"
