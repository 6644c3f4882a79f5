"""Correctness tests for model/model.py (CPU; a few CUDA-only checks are marked ``gpu``)."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F

from model import ModelConfig, Transformer
from model.model import MoE, apply_rope, rope_tables

# a seeded, one-thread torch for every test here (tests/model/conftest.py)
pytestmark = pytest.mark.usefixtures("seed_and_one_thread")

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")






# ---- causality --------------------------------------------------------------------------------


@pytest.mark.parametrize("kw", [{}, {"n_experts": 4, "experts_per_token": 2, "qk_norm": True},
                                {"n_kv_heads": 1, "tie_embeddings": False}])
def test_changing_future_tokens_leaves_past_logits_unchanged(kw, tiny: Callable):
    model = Transformer(tiny(**kw)).eval()
    idx = torch.randint(0, 97, (3, 24))
    t = 10
    changed = idx.clone()
    changed[:, t + 1:] = torch.randint(0, 97, (3, 24 - t - 1))
    with torch.no_grad():
        a, b = model(idx), model(changed)
    assert a.shape == (3, 24, 97)
    torch.testing.assert_close(a[:, :t + 1], b[:, :t + 1], rtol=0, atol=1e-5)
    assert not torch.allclose(a[:, t + 1:], b[:, t + 1:])  # the future did change


# ---- attention --------------------------------------------------------------------------------


def _rope_reference(x: torch.Tensor, theta: float) -> torch.Tensor:
    """Rotate pairs (i, i + D/2) as complex numbers: x * exp(i * pos * theta^(-2i/D))."""
    B, T, H, D = x.shape
    xc = torch.complex(x[..., : D // 2].double(), x[..., D // 2:].double())
    freqs = theta ** (-torch.arange(0, D, 2, dtype=torch.float64) / D)
    angle = torch.arange(T, dtype=torch.float64)[:, None] * freqs[None]
    rot = xc * torch.polar(torch.ones_like(angle), angle)[None, :, None, :]
    return torch.cat([rot.real, rot.imag], dim=-1).float()


def _explicit_attention(attn, x: torch.Tensor, theta: float, doc_ids=None) -> torch.Tensor:
    """Multi-head attention written out: per-head softmax(QK^T/sqrt(d) + mask) V."""
    B, T, _ = x.shape
    H, KV, D = attn.n_heads, attn.n_kv_heads, attn.head_dim
    q, k, v = attn.wqkv(x).split([H * D, KV * D, KV * D], dim=-1)
    q, k, v = q.view(B, T, H, D), k.view(B, T, KV, D), v.view(B, T, KV, D)
    q, k = _rope_reference(q, theta), _rope_reference(k, theta)
    rep = H // KV
    out = torch.zeros(B, T, H, D)
    allowed = torch.ones(T, T, dtype=torch.bool).tril()
    for b in range(B):
        mask = allowed if doc_ids is None else allowed & (doc_ids[b][:, None] == doc_ids[b][None])
        for h in range(H):
            s = q[b, :, h] @ k[b, :, h // rep].T / math.sqrt(D)
            s = s.masked_fill(~mask, float("-inf"))
            out[b, :, h] = s.softmax(-1) @ v[b, :, h // rep]
    return attn.wo(out.reshape(B, T, H * D))


@pytest.mark.parametrize("n_kv_heads", [4, 2, 1])
def test_attention_matches_explicit_multi_head_attention(n_kv_heads, tiny: Callable):
    cfg = tiny(n_kv_heads=n_kv_heads)
    model = Transformer(cfg)
    attn = model.layers[0].attn
    x = torch.randn(2, 12, cfg.d_model)
    cos, sin = model.rope_cos[:12], model.rope_sin[:12]
    with torch.no_grad():
        got = attn(x, cos, sin)
        ref = _explicit_attention(attn, x, cfg.rope_theta)
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-5)


def test_gqa_equals_mha_with_repeated_kv_heads(tiny: Callable):
    """A GQA layer is an MHA layer whose k/v projections repeat each kv head H/KV times."""
    gqa_cfg, mha_cfg = tiny(n_kv_heads=2), tiny(n_kv_heads=4)
    gqa = Transformer(gqa_cfg).layers[0].attn
    mha = Transformer(mha_cfg).layers[0].attn
    H, KV, D, d = 4, 2, gqa_cfg.head_dim, gqa_cfg.d_model
    wq, wk, wv = gqa.wqkv.weight.split([H * D, KV * D, KV * D])
    rep = lambda w: w.view(KV, D, d).repeat_interleave(H // KV, dim=0).reshape(H * D, d)  # noqa: E731
    with torch.no_grad():
        mha.wqkv.weight.copy_(torch.cat([wq, rep(wk), rep(wv)]))
        mha.wo.weight.copy_(gqa.wo.weight)
        cos, sin = rope_tables(D, 16, gqa_cfg.rope_theta)
        x = torch.randn(2, 16, d)
        torch.testing.assert_close(gqa(x, cos, sin), mha(x, cos, sin), rtol=1e-5, atol=1e-6)


def test_rope_matches_complex_rotation_and_scores_depend_only_on_relative_position():
    D, theta = 16, 10000.0
    cos, sin = rope_tables(D, 64, theta)
    x = torch.randn(1, 64, 2, D)
    torch.testing.assert_close(apply_rope(x, cos, sin), _rope_reference(x, theta),
                               rtol=1e-5, atol=1e-5)
    q, k = torch.randn(D), torch.randn(D)

    def score(m: int, n: int) -> float:
        seq_q = torch.zeros(1, 64, 1, D)
        seq_k = torch.zeros(1, 64, 1, D)
        seq_q[0, m, 0], seq_k[0, n, 0] = q, k
        rq, rk = apply_rope(seq_q, cos, sin), apply_rope(seq_k, cos, sin)
        return float(rq[0, m, 0] @ rk[0, n, 0])

    for m, n, shift in [(5, 2, 11), (20, 20, 30), (3, 0, 60), (40, 7, 13)]:
        assert score(m, n) == pytest.approx(score(m + shift, n + shift), abs=1e-4)
    assert abs(score(5, 2) - score(5, 3)) > 1e-3  # but they do depend on the offset


@pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")
def test_document_mask_flex_dense_and_separate_documents_agree(tiny: Callable):
    cfg = tiny(n_layers=2)
    model = Transformer(cfg).eval()
    T = 24
    doc = torch.tensor([[0] * 7 + [1] * 10 + [2] * 7, [0] * 24])
    idx = torch.randint(0, 97, (2, T))
    with torch.no_grad():
        dense = model(idx, attn_mask=model.document_mask(doc, impl="sdpa"))
        flex = model(idx, attn_mask=model.document_mask(doc, impl="flex"))
        torch.testing.assert_close(flex, dense, rtol=1e-4, atol=1e-5)
        # Row 1 is one document: same as no mask at all.
        torch.testing.assert_close(dense[1], model(idx[1:])[0], rtol=1e-4, atol=1e-5)
        # Each document of row 0 alone (from position 0): RoPE is relative, so identical.
        for lo, hi in [(0, 7), (7, 17), (17, 24)]:
            alone = model(idx[:1, lo:hi])[0]
            torch.testing.assert_close(dense[0, lo:hi], alone, rtol=1e-4, atol=1e-4)


def test_explicit_attention_with_document_mask_matches_layer(tiny: Callable):
    cfg = tiny(n_kv_heads=2)
    model = Transformer(cfg)
    attn = model.layers[1].attn
    doc = torch.tensor([[0] * 5 + [1] * 6, [0] * 2 + [1] * 9])
    x = torch.randn(2, 11, cfg.d_model)
    with torch.no_grad():
        got = attn(x, model.rope_cos[:11], model.rope_sin[:11], model.document_mask(doc))
        ref = _explicit_attention(attn, x, cfg.rope_theta, doc)
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-5)


# ---- mixture of experts ----------------------------------------------------------------------


def _naive_moe(moe: MoE, x: torch.Tensor) -> torch.Tensor:
    """Per token: softmax router, top-k, weighted sum of those experts' SwiGLU outputs."""
    out = torch.zeros_like(x)
    f = moe.w2.shape[1]
    for t in range(x.shape[0]):
        p = (x[t].double() @ moe.router.weight.double().T).softmax(-1)
        sel = (p + moe.expert_bias.double()) if moe.balance == "bias" else p
        top = sel.topk(moe.top_k).indices
        w = p[top] / p[top].sum() if moe.norm_topk_prob else p[top]
        for e, we in zip(top.tolist(), w, strict=True):
            h = x[t] @ moe.w13[e]
            y = (F.silu(h[:f]) * h[f:]) @ moe.w2[e]
            out[t] += float(we) * y
    return out


@pytest.mark.parametrize("k,balance,norm", [(2, "aux", True), (1, "aux", False),
                                            (3, "bias", True)])
def test_moe_equals_naive_per_token_weighted_sum(k, balance, norm, tiny: Callable):
    cfg = tiny(n_experts=6, experts_per_token=k, router_balance=balance, norm_topk_prob=norm,
               moe_d_ff=24)
    moe = MoE(cfg)
    torch.nn.init.normal_(moe.w13, std=0.2)
    torch.nn.init.normal_(moe.w2, std=0.2)
    torch.nn.init.normal_(moe.router.weight, std=0.5)
    if balance == "bias":
        moe.expert_bias.copy_(torch.tensor([0.3, -0.2, 0.0, 0.1, -0.4, 0.2]))
    x = torch.randn(2, 9, cfg.d_model)
    with torch.no_grad():
        y, _, _ = moe(x)
        ref = _naive_moe(moe, x.reshape(-1, cfg.d_model)).view_as(x)
    torch.testing.assert_close(y, ref, rtol=1e-4, atol=1e-5)


def test_moe_grouped_mm_path_matches_per_expert_loop_in_bf16(tiny: Callable):
    if not hasattr(torch, "_grouped_mm"):
        pytest.skip("torch._grouped_mm not available")
    cfg = tiny(n_experts=8, experts_per_token=2, moe_d_ff=32)
    moe = MoE(cfg)
    torch.nn.init.normal_(moe.router.weight, std=0.5)
    x = torch.randn(64, cfg.d_model, dtype=torch.bfloat16)
    r = moe.route(x)
    order = r.expert_idx.reshape(-1).argsort(stable=True)
    xs = x[order // 2]
    with torch.no_grad():
        fast = moe._expert_mlp(xs, r.counts)
        moe.use_grouped_mm = False
        slow = moe._expert_mlp(xs, r.counts)
    torch.testing.assert_close(fast.float(), slow.float(), rtol=2e-2, atol=2e-2)


def test_balancing_losses_match_hand_computation():
    E, k, d = 4, 2, 4
    cfg = ModelConfig(vocab_size=8, d_model=d, n_layers=1, n_heads=1, d_ff=8, n_experts=E,
                      experts_per_token=k)
    moe = MoE(cfg)
    with torch.no_grad():
        moe.router.weight.copy_(torch.eye(E))  # logits == token vectors
    logits = [[2.0, 1.0, 0.0, -1.0], [0.0, 3.0, 0.5, 0.0], [1.0, 0.5, 2.0, 0.0]]
    r = moe.route(torch.tensor(logits))
    probs = []
    for row in logits:
        z = sum(math.exp(v) for v in row)
        probs.append([math.exp(v) / z for v in row])
    # top-2 per token by hand: {0, 1}, {1, 2}, {2, 0}
    chosen = [[0, 1], [1, 2], [2, 0]]
    assert [sorted(c) for c in r.expert_idx.tolist()] == [sorted(c) for c in chosen]
    counts = [sum(e in c for c in chosen) for e in range(E)]
    f = [c / (len(logits) * k) for c in counts]
    P = [sum(p[e] for p in probs) / len(probs) for e in range(E)]
    aux = E * sum(fi * pi for fi, pi in zip(f, P, strict=True))
    zl = sum(math.log(sum(math.exp(v) for v in row)) ** 2 for row in logits) / len(logits)
    assert r.counts.tolist() == counts
    assert float(r.aux_loss) == pytest.approx(aux, rel=1e-6)
    assert float(r.z_loss) == pytest.approx(zl, rel=1e-6)
    # Perfect balance gives aux == 1 (uniform probabilities, equal counts).
    with torch.no_grad():
        moe.router.weight.zero_()
    r = moe.route(torch.randn(8, d))
    assert float(r.aux_loss) == pytest.approx(1.0, rel=1e-6)


def test_aux_free_bias_steers_routing_and_updates_toward_balance(tiny: Callable):
    cfg = tiny(n_experts=4, experts_per_token=1, router_balance="bias", bias_update_rate=0.5)
    moe = MoE(cfg)
    x = torch.randn(32, cfg.d_model)
    with torch.no_grad():
        moe.expert_bias.copy_(torch.tensor([0.0, 0.0, 5.0, 0.0]))
        r = moe.route(x)
    assert (r.expert_idx == 2).all()  # bias decides the choice...
    assert torch.allclose(r.weights, torch.ones_like(r.weights))  # ...weights renormalised probs
    moe.update_bias(torch.tensor([10.0, 2.0, 0.0, 4.0]))  # mean 4
    torch.testing.assert_close(moe.expert_bias, torch.tensor([-0.5, 0.5, 5.5, 0.0]))
    moe.update_bias(torch.tensor([10.0, 2.0, 0.0, 4.0]), keep=torch.tensor(0.0))  # skipped step
    moe.update_bias(torch.zeros(4))  # no assignments counted: no change
    torch.testing.assert_close(moe.expert_bias, torch.tensor([-0.5, 0.5, 5.5, 0.0]))
    # In "aux" mode the bias is neither used nor updated.
    aux = MoE(tiny(n_experts=4, experts_per_token=1))
    aux.update_bias(torch.tensor([10.0, 2.0, 0.0, 4.0]))
    assert aux.expert_bias.abs().sum() == 0


def test_model_reports_expert_load_and_adds_losses(tiny: Callable):
    cfg = tiny(n_experts=4, experts_per_token=2, moe_every=2, n_layers=4)
    model = Transformer(cfg)
    assert [b.is_moe for b in model.layers] == [False, True, False, True]
    idx = torch.randint(0, 97, (2, 16))
    out = model(idx, idx)
    torch.testing.assert_close(out.loss, out.ce_loss + cfg.aux_loss_coef * out.aux_loss
                               + cfg.z_loss_coef * out.z_loss)
    load = model.consume_expert_load()
    assert load.shape == (2, 4)
    torch.testing.assert_close(load.sum(-1), torch.ones(2))
    assert model.consume_expert_load().sum() == 0  # counters were reset
    model.eval()
    model(idx)
    assert model.consume_expert_load().sum() == 0  # eval forwards are not counted


# ---- accounting and training sanity ---------------------------------------------------------


def test_param_count_and_flops_formula(tiny: Callable):
    cfg = tiny(n_experts=4, experts_per_token=2, moe_d_ff=16, tie_embeddings=True)
    m = Transformer(cfg)
    d, V, L, H, D, KV = 32, 97, 2, 4, 8, 2
    attn = d * (H + 2 * KV) * D + H * D * d
    norms = 2 * d
    moe_total = d * 4 + 4 * 3 * d * 16
    moe_active = d * 4 + 2 * 3 * d * 16
    total = V * d + L * (attn + norms + moe_total) + d
    assert m.num_params() == total
    n_active = V * d + L * (attn + norms + moe_active) + d  # tied: the head counts once
    assert m.num_params(active=True, embedding=False) == n_active
    assert m.flops_per_token(64) == 6 * n_active + 12 * L * H * D * 64
    untied = Transformer(tiny(tie_embeddings=False))
    assert untied.num_params() - untied.num_params(embedding=False) == V * d


def test_tiny_model_overfits_one_batch(tiny: Callable):
    model = Transformer(tiny(n_experts=4, experts_per_token=2))
    idx = torch.randint(0, 97, (4, 33))
    x, y = idx[:, :-1], idx[:, 1:]
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    first = None
    for _ in range(120):
        out = model(x, y)
        opt.zero_grad()
        out.loss.backward()
        opt.step()
        first = first if first is not None else out.ce_loss.item()
    assert first > 4.0  # ~ln(97) at init
    assert out.ce_loss.item() < 0.1


def test_config_validation():
    with pytest.raises(ValueError):
        ModelConfig(d_model=32, n_heads=4, n_kv_heads=3)
    with pytest.raises(ValueError):
        ModelConfig.from_dict({"d_model": 32, "n_head": 4})
    assert ModelConfig(d_model=768, n_heads=12).d_ff == 2048  # 8/3 * 768 rounded to 256


# ---- CUDA -------------------------------------------------------------------------------------


@pytest.mark.gpu
@cuda
def test_gpu_flash_attention_kernel_matches_math():
    from torch.nn.attention import SDPBackend, sdpa_kernel

    cfg = ModelConfig(vocab_size=1024, d_model=512, n_layers=2, n_heads=8, n_kv_heads=8,
                      max_seq_len=1024)
    model = Transformer(cfg).cuda()
    idx = torch.randint(0, 1024, (2, 1024), device="cuda")
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
        with sdpa_kernel([SDPBackend.FLASH_ATTENTION]):  # raises if flash cannot run
            flash = model(idx).float()
        with sdpa_kernel([SDPBackend.MATH]):
            math_ = model(idx).float()
    rel = (flash - math_).norm() / math_.norm()
    assert rel < 2e-2


@pytest.mark.gpu
@cuda
def test_gpu_compiled_flex_document_mask_matches_dense_mask():
    cfg = ModelConfig(vocab_size=1024, d_model=256, n_layers=2, n_heads=4, n_kv_heads=2,
                      max_seq_len=512)
    model = Transformer(cfg).cuda()
    idx = torch.randint(0, 1024, (2, 512), device="cuda")
    doc = torch.cumsum(torch.rand(2, 512, device="cuda") < 0.01, dim=1)
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
        dense = model(idx, attn_mask=model.document_mask(doc, impl="sdpa")).float()
        flex = torch.compile(model)(idx, attn_mask=model.document_mask(doc, impl="flex")).float()
        causal = model(idx).float()
    assert (flex - dense).norm() / dense.norm() < 2e-2
    assert (causal - dense).norm() / dense.norm() > 5e-2  # the mask does change the result


@pytest.mark.gpu
@cuda
def test_gpu_moe_grouped_mm_matches_loop_compiled_and_backward():
    """Grouped-GEMM experts (bf16) against the per-expert loop, eager and compiled, with
    gradients. The router is made decisive (large weights) so that bf16 rounding differences
    between the paths do not flip top-k choices."""
    cfg = ModelConfig(vocab_size=64, d_model=256, n_layers=1, n_heads=4, n_experts=8,
                      experts_per_token=2, moe_d_ff=512)
    moe = MoE(cfg).cuda()
    torch.nn.init.normal_(moe.w13, std=0.02)
    torch.nn.init.normal_(moe.w2, std=0.02)
    torch.nn.init.normal_(moe.router.weight, std=1.0)
    x = torch.randn(8, 512, 256, device="cuda")

    def run(grouped: bool, compiled: bool):
        moe.use_grouped_mm = grouped
        moe.zero_grad(set_to_none=True)
        f = torch.compile(moe) if compiled else moe
        with torch.autocast("cuda", dtype=torch.bfloat16):
            y, aux, _ = f(x)
        (y.float().square().mean() + aux).backward()
        return y.float().detach(), moe.w13.grad.clone(), moe.router.weight.grad.clone()

    loop = run(False, False)
    for got in (run(True, False), run(True, True)):
        for a, b in zip(got, loop, strict=True):
            assert torch.isfinite(a).all()
            assert (a - b).norm() / b.norm() < 3e-2


# ---- compilation ------------------------------------------------------------------------------


def test_head_and_loss_compile_as_their_own_graph_when_blocks_break_the_graph(tiny: Callable,
                                                                                monkeypatch):
    # FSDP2's hooks break the graph at every block, and a graph break inside the block loop
    # leaves the rest of Transformer.forward eager; the head and the cross-entropy over the
    # vocabulary must still be compiled (Transformer._head is a frame of its own).
    from model.model import Block

    model = Transformer(tiny())
    original = Block.forward

    def breaking(self, *args, **kwargs):
        torch._dynamo.graph_break()
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Block, "forward", breaking)
    graphs: list[str] = []

    def backend(gm: torch.fx.GraphModule, example_inputs):
        graphs.append(gm.code)
        return gm.forward

    torch._dynamo.reset()
    x = torch.randint(0, 97, (2, 16))
    try:
        out = torch.compile(model, backend=backend)(x, x)
    finally:
        torch._dynamo.reset()
    assert any("cross_entropy" in code for code in graphs), graphs
    assert out.loss.item() == pytest.approx(model(x, x).loss.item(), rel=1e-6)
