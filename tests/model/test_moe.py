"""Tests of model/moe.py and model/upcycle.py: shared and fine-grained experts, capacity
dropping, expert-choice routing, auxiliary-loss-free balancing, sigmoid scores, the sync-free
float32 expert path and upcycling (CPU; CUDA-only checks are marked ``gpu``)."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F

from model import ModelConfig, Transformer
from model.moe import MoE, capacity, top_k_indices
from model.train import run
from model.upcycle import main as upcycle_main

pytestmark = pytest.mark.usefixtures("seed_and_one_thread")

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def _randomise(moe: MoE, router_std: float = 0.5) -> MoE:
    for p in (moe.w13, moe.w2):
        torch.nn.init.normal_(p, std=0.2)
    torch.nn.init.normal_(moe.router.weight, std=router_std)
    return moe


def _expert(moe: MoE, e: int, x: torch.Tensor) -> torch.Tensor:
    """Expert ``e``'s SwiGLU on the vector(s) ``x``, written out."""
    f = moe.w2.shape[1]
    h = x.double() @ moe.w13[e].double()
    return (F.silu(h[..., :f]) * h[..., f:]) @ moe.w2[e].double()


@pytest.mark.parametrize("n,e,k", [(1, 1, 1), (257, 8, 2), (64, 64, 8), (33, 5, 5)])
def test_top_k_indices_equals_topk(n: int, e: int, k: int) -> None:
    scores = torch.rand(n, e)  # continuous: no ties
    assert torch.equal(top_k_indices(scores, k), scores.topk(k, dim=-1).indices)


def test_top_k_indices_breaks_ties_toward_the_lowest_index() -> None:
    scores = torch.tensor([[0.5, 0.5, 0.1, 0.5], [0.0, 0.0, 0.0, 0.0]])
    assert top_k_indices(scores, 3).tolist() == [[0, 1, 3], [0, 1, 2]]


def _naive_token_choice(moe: MoE, x: torch.Tensor, cap: int | None = None) -> torch.Tensor:
    """Per token in order: scores, top-k on score + bias, weights; an expert past ``cap``
    assignments (counted in token order, a token's choices in top-k order) drops the pair."""
    out = torch.zeros(x.shape[0], x.shape[1], dtype=torch.float64)
    used = [0] * moe.n_experts
    picks = []
    for t in range(x.shape[0]):
        logits = x[t].double() @ moe.router.weight.double().T
        s = logits.sigmoid() if moe.score == "sigmoid" else logits.softmax(-1)
        sel = s + moe.expert_bias.double() if moe.balance == "bias" else s
        top = sel.topk(moe.top_k).indices.tolist()
        w = s[top] / s[top].sum() if moe.norm_topk_prob else s[top]
        picks.append((top, w))
    # Capacity is taken in token order within each expert (pairs sorted stably by expert).
    for t, (top, w) in enumerate(picks):
        for e, we in zip(top, w, strict=True):
            used[e] += 1
            if cap is None or used[e] <= cap:
                out[t] += we * _expert(moe, e, x[t])
    return out


@pytest.mark.parametrize("n_experts", [256, 300])  # 8-bit sort keys up to 256, 32-bit past
def test_token_choice_sorts_pairs_by_expert_at_any_expert_count(tiny: Callable, n_experts: int):
    cfg = tiny(n_experts=n_experts, experts_per_token=3, moe_d_ff=4)
    moe = _randomise(MoE(cfg))
    x = torch.randn(64, cfg.d_model)
    with torch.no_grad():
        y, _, _ = moe(x)
    torch.testing.assert_close(y.double(), _naive_token_choice(moe, x), rtol=1e-4, atol=1e-5)


# ---- shared and fine-grained experts ---------------------------------------------------------


def test_shared_experts_add_an_always_on_swiglu_to_the_routed_sum(tiny: Callable):
    cfg = tiny(n_experts=4, experts_per_token=2, moe_d_ff=16, n_shared_experts=2)
    moe = _randomise(MoE(cfg))
    assert moe.shared.w2.in_features == 2 * 16  # two experts of width moe_d_ff, fused
    x = torch.randn(20, cfg.d_model)
    with torch.no_grad():
        y, _, _ = moe(x)
        # the fused shared SwiGLU is the sum of two separate experts of width 16
        w13, w2 = moe.shared.w13.weight, moe.shared.w2.weight  # [2*32, d], [d, 32]
        gate, up = (x @ w13.T).chunk(2, dim=-1)
        shared = sum((F.silu(gate[:, i * 16:(i + 1) * 16]) * up[:, i * 16:(i + 1) * 16])
                     @ w2[:, i * 16:(i + 1) * 16].T for i in range(2))
    ref = _naive_token_choice(moe, x).float() + shared
    torch.testing.assert_close(y, ref, rtol=1e-4, atol=1e-5)
    m = Transformer(cfg)
    shared_params = 3 * cfg.d_model * 32
    dense_like = Transformer(tiny(n_experts=4, experts_per_token=2, moe_d_ff=16))
    assert (m.num_params(active=True) - dense_like.num_params(active=True)
            == cfg.n_layers * shared_params)  # shared experts are always active


def test_fine_grained_experts_keep_active_parameters(tiny: Callable):
    """The README's recipe: m times the experts, m times k, expert width / m."""
    coarse = tiny(n_experts=4, experts_per_token=1, moe_d_ff=64)
    fine = tiny(n_experts=16, experts_per_token=4, moe_d_ff=16, n_shared_experts=0)
    a, b = Transformer(coarse), Transformer(fine)
    router_diff = 2 * (16 - 4) * coarse.d_model  # only the router grows (2 layers)
    assert b.num_params(active=True) - a.num_params(active=True) == router_diff
    assert b.num_params() - a.num_params() == router_diff
    idx = torch.randint(0, 97, (2, 12))
    out = b(idx, idx)
    assert torch.isfinite(out.loss)


# ---- capacity factor and dropping ------------------------------------------------------------


@pytest.mark.parametrize("factor", [0.5, 1.0])
def test_capacity_drops_pairs_past_capacity_in_token_order(factor, tiny: Callable):
    cfg = tiny(n_experts=4, experts_per_token=2, moe_d_ff=16, moe_capacity_factor=factor)
    moe = _randomise(MoE(cfg), router_std=1.5).train()
    x = torch.randn(24, cfg.d_model)
    cap = capacity(24, factor, 2, 4)
    assert cap == int(factor * 24 * 2 / 4)
    with torch.no_grad():
        y, _, _ = moe(x)
        r = moe.route(x)
    torch.testing.assert_close(y.double(), _naive_token_choice(moe, x, cap), rtol=1e-4,
                               atol=1e-5)
    expected_dropped = float((r.counts - cap).clamp(min=0).sum())
    assert expected_dropped > 0  # the skewed router overfills some expert
    assert moe.drop_counts.tolist() == [expected_dropped, 48.0]
    with torch.no_grad():  # evaluation and generation route dropless
        y_eval, _, _ = moe.eval()(x)
    torch.testing.assert_close(y_eval.double(), _naive_token_choice(moe, x), rtol=1e-4,
                               atol=1e-5)


def test_dropped_fraction_reported_per_layer_and_zero_when_dropless(tiny: Callable):
    cfg = tiny(n_experts=4, experts_per_token=2, moe_capacity_factor=0.5, n_layers=2)
    model = Transformer(cfg).train()
    idx = torch.randint(0, 97, (2, 16))
    model(idx, idx)
    stats = model.consume_moe_stats()
    assert stats.dropped.shape == (2,)
    # capacity 0.5 keeps at most half of the 64 pairs of each layer
    assert (stats.dropped >= 0.5).all() and (stats.dropped < 1).all()
    assert model.consume_moe_stats().dropped.tolist() == [0.0, 0.0]  # counters reset
    dropless = Transformer(tiny(n_experts=4, experts_per_token=2)).train()
    dropless(idx, idx)
    assert dropless.consume_moe_stats().dropped.tolist() == [0.0, 0.0]


def test_trainer_logs_dropped_fraction_per_layer(tmp_path, tiny_config: Callable, capsys):
    cfg = tiny_config(tmp_path, max_steps=2, eval_every=100)
    cfg["model"].update(n_experts=4, experts_per_token=2, moe_d_ff=32, moe_capacity_factor=1.0)
    run(cfg)
    recs = [json.loads(ln) for ln in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in recs if r["kind"] == "train"]
    assert len(train) == 2
    for r in train:
        assert len(r["dropped_frac"]) == 2 and all(0 <= d < 1 for d in r["dropped_frac"])
    assert "dropped" in capsys.readouterr().out


# ---- expert choice ---------------------------------------------------------------------------


def test_expert_choice_each_expert_takes_its_top_tokens(tiny: Callable):
    cfg = tiny(n_experts=4, experts_per_token=2, moe_d_ff=16, moe_routing="expert_choice",
               router_balance="none", moe_capacity_factor=0.75)
    moe = _randomise(MoE(cfg)).train()
    N = 16
    x = torch.randn(N, cfg.d_model)
    cap = capacity(N, 0.75, 2, 4)  # 6 tokens per expert
    with torch.no_grad():
        y, aux, z = moe(x)
    s = (x.double() @ moe.router.weight.double().T).softmax(-1)  # [N, E]
    ref = torch.zeros(N, cfg.d_model, dtype=torch.float64)
    taken = set()
    for e in range(4):
        for t in s[:, e].topk(cap).indices.tolist():
            ref[t] += s[t, e] * _expert(moe, e, x[t])
            taken.add(t)
    torch.testing.assert_close(y.double(), ref, rtol=1e-4, atol=1e-5)
    assert float(aux) == 0.0 and float(z) > 0
    assert moe.tokens_per_expert.tolist() == [cap] * 4
    assert moe.drop_counts.tolist() == [N - len(taken), N]


# ---- balancing and gating --------------------------------------------------------------------


@pytest.mark.parametrize("score", ["softmax", "sigmoid"])
def test_bias_mode_adds_no_auxiliary_loss(score, tiny: Callable):
    cfg = tiny(n_experts=4, experts_per_token=2, router_balance="bias", router_score=score,
               n_layers=2)
    model = Transformer(cfg)
    idx = torch.randint(0, 97, (2, 16))
    out = model(idx, idx)
    assert float(out.aux_loss.detach()) > 0.5  # still computed and reported...
    # ...but not in the loss: loss - ce is the router z-loss term only
    torch.testing.assert_close(out.loss - out.ce_loss, cfg.z_loss_coef * out.z_loss,
                               rtol=1e-6, atol=1e-7)
    aux = Transformer(tiny(n_experts=4, experts_per_token=2, router_score=score, n_layers=2))
    out = aux(idx, idx)
    torch.testing.assert_close(out.loss - out.ce_loss, 0.01 * out.aux_loss
                               + 0.001 * out.z_loss, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("balance,norm", [("bias", True), ("aux", False)])
def test_sigmoid_gating_matches_naive(balance, norm, tiny: Callable):
    cfg = tiny(n_experts=6, experts_per_token=2, moe_d_ff=16, router_score="sigmoid",
               router_balance=balance, norm_topk_prob=norm)
    moe = _randomise(MoE(cfg))
    if balance == "bias":
        moe.expert_bias.copy_(torch.tensor([0.3, -0.2, 0.0, 0.1, -0.4, 0.2]))
    x = torch.randn(15, cfg.d_model)
    with torch.no_grad():
        y, _, _ = moe(x)
        r = moe.route(x)
    torch.testing.assert_close(y.double(), _naive_token_choice(moe, x), rtol=1e-4, atol=1e-5)
    assert ((r.probs > 0) & (r.probs < 1)).all()  # affinities, not a distribution
    if norm:
        torch.testing.assert_close(r.weights.sum(-1), torch.ones(15))


# ---- the float32 expert path -----------------------------------------------------------------


def _per_expert_loop(moe: MoE, xs: torch.Tensor, counts: list[int]) -> torch.Tensor:
    outs, lo = [], 0
    for e, c in enumerate(counts):
        gate, up = (xs[lo:lo + c] @ moe.w13[e]).chunk(2, dim=-1)
        outs.append((F.silu(gate) * up) @ moe.w2[e])
        lo += c
    return torch.cat(outs)


def test_float32_expert_path_matches_per_expert_loop_without_host_reads(tiny: Callable,
                                                                       monkeypatch):
    cfg = tiny(n_experts=5, experts_per_token=2, moe_d_ff=24)
    moe = _randomise(MoE(cfg), router_std=1.0)
    x = torch.randn(40, cfg.d_model, requires_grad=True)
    r = moe.route(x)
    counts = r.counts.long().tolist()
    order = r.expert_idx.reshape(-1).argsort(stable=True)
    xs = x[order // 2]
    ref = _per_expert_loop(moe, xs, counts)

    def forbidden(*a, **k):
        raise AssertionError("host read of a device tensor in the expert path")

    for name in ("item", "tolist", "nonzero", "__bool__", "__int__", "__float__"):
        monkeypatch.setattr(torch.Tensor, name, forbidden)
    got = moe._expert_mlp(xs, r.counts, cap=40)
    y, _, _ = moe(x)
    y.square().sum().backward()
    monkeypatch.undo()
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-6)
    assert torch.isfinite(x.grad).all() and moe.w13.grad.abs().sum() > 0


def test_moe_gradients_match_naive(tiny: Callable):
    """Backward through the custom row permutations equals autograd through the naive sum."""
    cfg = tiny(n_experts=4, experts_per_token=2, moe_d_ff=16, moe_capacity_factor=0.75)
    moe = _randomise(MoE(cfg), router_std=1.0)
    x = torch.randn(12, cfg.d_model, dtype=torch.float64, requires_grad=True)
    moe = moe.double()
    y, _, _ = moe(x)
    gx, gw = torch.autograd.grad(y.square().sum(), (x, moe.w13))
    x2 = x.detach().clone().requires_grad_(True)
    ref = _naive_token_choice(moe, x2, capacity(12, 0.75, 2, 4))
    rx, rw = torch.autograd.grad(ref.square().sum(), (x2, moe.w13))
    # the router runs in float32 whatever the input dtype: float32-level agreement
    torch.testing.assert_close(gx, rx, rtol=1e-4, atol=5e-5)
    torch.testing.assert_close(gw, rw, rtol=1e-4, atol=5e-5)


@pytest.mark.skipif(not hasattr(torch, "_grouped_mm"), reason="needs torch._grouped_mm")
def test_bf16_grouped_path_matches_naive(tiny: Callable):
    """The bf16 grouped-GEMM path (CPU autocast here): output and gradients (router
    included, through the combine weights) equal the naive per-token sum within bf16
    rounding."""
    cfg = tiny(n_experts=4, experts_per_token=2, d_model=32, moe_d_ff=16)
    moe = _randomise(MoE(cfg), router_std=1.0)
    x = torch.randn(24, cfg.d_model, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert moe.use_grouped_mm
        y, _, _ = moe(x)
    g = torch.randn_like(y)
    gx, gw, gr = torch.autograd.grad((y.float() * g).sum(), (x, moe.w2, moe.router.weight))
    x2 = x.detach().clone().requires_grad_(True)
    ref = _naive_token_choice(moe, x2)
    rx, rw, rr = torch.autograd.grad((ref * g.double()).sum(), (x2, moe.w2, moe.router.weight))
    torch.testing.assert_close(y.double(), ref, rtol=3e-2, atol=3e-2)
    for got, want in ((gx, rx), (gw, rw), (gr, rr)):
        err = (got.double() - want).norm() / want.norm()
        assert err < 3e-2, err


# ---- config validation -----------------------------------------------------------------------


@pytest.mark.parametrize("kw,match", [
    ({"n_experts": 4, "moe_routing": "expert"}, "moe_routing"),
    ({"n_experts": 4, "router_score": "tanh"}, "router_score"),
    ({"n_experts": 4, "router_balance": "loss"}, "router_balance"),
    ({"n_experts": 4, "moe_capacity_factor": 0}, "moe_capacity_factor"),
    ({"n_experts": 4, "n_shared_experts": -1}, "n_shared_experts"),
    ({"n_experts": 4, "experts_per_token": 5}, "experts_per_token"),
    ({"n_experts": 4, "moe_routing": "expert_choice"}, "router_balance: none"),
    ({"n_experts": 4, "router_balance": "none"}, "needs balancing"),
    ({"n_experts": 4, "moe_d_ff": 0}, "moe_d_ff"),
    ({"n_experts": 4, "aux_loss_coef": -1.0}, "aux_loss_coef"),
    ({"n_shared_experts": 2}, "dense model"),
    ({"moe_capacity_factor": 1.25}, "dense model"),
    ({"n_experts": 4, "moe_every": 0}, "moe_every"),
])
def test_bad_moe_options_are_refused_with_the_field_named(kw, match, tiny: Callable):
    with pytest.raises(ValueError, match=match):
        tiny(**kw)


def test_config_round_trips_through_dict(tiny: Callable):
    cfg = tiny(n_experts=8, experts_per_token=2, n_shared_experts=1, moe_capacity_factor=1.25,
               router_score="sigmoid", router_balance="bias", moe_d_ff=16)
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg


# ---- upcycling -------------------------------------------------------------------------------


def test_upcycled_model_first_step_loss_equals_dense(tmp_path, tiny_config: Callable,
                                                      monkeypatch):
    """Dense training run -> checkpoint -> upcycle (uniform router, no noise) -> the trainer's
    first step from the upcycled checkpoint has the dense model's loss on the same batch."""
    dense_cfg = tiny_config(tmp_path / "dense", max_steps=3, eval_every=100)
    run(dense_cfg)
    dense_ckpt = tmp_path / "dense" / "run"
    out = tmp_path / "moe" / "state.pt"
    assert upcycle_main([str(dense_ckpt), str(out), "--experts", "4", "--top-k", "2",
                         "--noise", "0", "--router-init", "zero",
                         "--set", "router_balance=bias", "--set", "z_loss_coef=0"]) == 0
    state = torch.load(out, weights_only=True)
    moe_cfg = state["model_config"]
    assert moe_cfg["n_experts"] == 4 and moe_cfg["moe_d_ff"] == moe_cfg["d_ff"]
    w13 = state["model"]["layers.0.ffn.w13"]
    torch.testing.assert_close(w13[0], w13[3])  # every expert is the dense MLP

    def first_step(root, model_section, init_from):
        cfg = tiny_config(root, max_steps=1, eval_every=100, init_from=str(init_from),
                          eval_full_final=False)
        cfg["model"] = model_section
        return run(cfg)["train_losses"][1]

    dense_state = torch.load(dense_ckpt / "checkpoints" / "step_00000003" / "state.pt",
                             weights_only=True)
    dense_loss = first_step(tmp_path / "a", dense_state["model_config"], dense_ckpt)
    moe_loss = first_step(tmp_path / "b", moe_cfg, out)
    assert moe_loss == pytest.approx(dense_loss, rel=1e-5)

    # With noise and a fresh router the experts differ and the router is not uniform; without
    # OUT_CKPT (the issue's `python -m model.upcycle DENSE_CKPT --experts N`) the checkpoint
    # goes to ./upcycled-NxK.pt.
    monkeypatch.chdir(tmp_path)
    upcycle_main([str(dense_ckpt), "--experts", "4", "--noise", "0.01"])
    sd = torch.load(tmp_path / "upcycled-4x2.pt", weights_only=True)["model"]
    assert not torch.equal(sd["layers.0.ffn.w13"][0], sd["layers.0.ffn.w13"][1])
    assert sd["layers.0.ffn.router.weight"].abs().sum() > 0
    # a config mismatch is refused with the differing key named
    cfg = tiny_config(tmp_path / "c", max_steps=1, init_from=str(out))
    with pytest.raises(ValueError, match="n_experts"):
        run(cfg)
    with pytest.raises(SystemExit, match="already a mixture"):
        upcycle_main([str(out), str(tmp_path / "x.pt"), "--experts", "2"])


# ---- CUDA ------------------------------------------------------------------------------------


@pytest.mark.gpu
@cuda
@pytest.mark.parametrize("kw", [{}, {"moe_capacity_factor": 1.0, "n_shared_experts": 1},
                                {"moe_routing": "expert_choice", "router_balance": "none"},
                                {"router_score": "sigmoid", "router_balance": "bias"}])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_gpu_expert_paths_do_not_synchronise(kw, dtype):
    """Forward and backward of the non-bf16 expert paths under CUDA sync debug mode
    "error" (any host-device synchronisation raises), and equal to float64 on the CPU.

    The router is decisive so that CPU and GPU rounding pick the same experts; for sigmoid
    scores it stays out of saturation (logits over ~17 round to exactly 1.0 in float32 and tie,
    and ties break differently on the two devices)."""
    cfg = ModelConfig(vocab_size=64, d_model=128, n_layers=1, n_heads=4, n_experts=8,
                      experts_per_token=2, moe_d_ff=256, **kw)
    moe = _randomise(MoE(cfg), router_std=0.3 if cfg.router_score == "sigmoid" else 1.0)
    ref_moe = MoE(cfg).double()
    ref_moe.load_state_dict(moe.state_dict())
    x = torch.randn(4, 256, 128)
    with torch.no_grad():
        ref, _, _ = ref_moe(x.double())
    moe = moe.cuda().to(dtype) if dtype == torch.float16 else moe.cuda()
    xc = x.cuda().to(dtype).requires_grad_(True)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        y, aux, z = moe(xc)
        (y.float().square().mean() + aux + z).backward()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    tol = 1e-4 if dtype == torch.float32 else 3e-2
    assert (y.double().cpu() - ref).norm() / ref.norm() < tol


@pytest.mark.gpu
@cuda
def test_gpu_compiled_bf16_moe_options_match_eager():
    for kw in ({"n_shared_experts": 1, "moe_capacity_factor": 1.25},
               {"moe_routing": "expert_choice", "router_balance": "none"},
               {"router_score": "sigmoid", "router_balance": "bias", "n_experts": 16,
                "experts_per_token": 4, "moe_d_ff": 128}):
        cfg = ModelConfig(**{"vocab_size": 64, "d_model": 256, "n_layers": 1, "n_heads": 4,
                             "n_experts": 8, "experts_per_token": 2, "moe_d_ff": 512, **kw})
        moe = _randomise(MoE(cfg), router_std=1.0).cuda()
        x = torch.randn(8, 512, 256, device="cuda")
        with torch.autocast("cuda", dtype=torch.bfloat16):
            eager, _, _ = moe(x)
            compiled, _, _ = torch.compile(moe)(x)
        assert (compiled.float() - eager.float()).norm() / eager.float().norm() < 3e-2, kw
