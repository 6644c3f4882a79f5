"""Tests of model/casts.py: ``cast_saved`` is ``Tensor.to`` in value and gradient, and under
``torch.compile``'s partitioner its result is an input of the backward graph, never cast there
again."""

from __future__ import annotations

import torch
from functorch.compile import make_boxed_func, min_cut_rematerialization_partition
from torch._dynamo.backends.common import aot_autograd

from model.casts import cast_saved
from model.model import ModelConfig, Transformer


def test_cast_saved_equals_to_in_value_and_gradient():
    w = torch.randn(3, 5, 7, requires_grad=True)
    w2 = w.detach().clone().requires_grad_()
    up = torch.randn(3, 5, 7, dtype=torch.bfloat16)
    out = cast_saved(w, torch.bfloat16)
    ref = w2.to(torch.bfloat16)
    assert out.dtype == torch.bfloat16 and torch.equal(out, ref)
    out.backward(up)
    ref.backward(up)
    assert w.grad.dtype == torch.float32 and torch.equal(w.grad, w2.grad)


def test_cast_saved_returns_the_tensor_itself_when_the_dtype_matches():
    w = torch.randn(4, 4, requires_grad=True)
    assert cast_saved(w, torch.float32) is w


def _aot_graphs(model: torch.nn.Module, idx: torch.Tensor) -> dict[str, torch.fx.GraphModule]:
    """Forward and backward graphs of one compiled bf16 training step, as inductor's
    partitioner (min-cut rematerialisation) splits them."""
    graphs: dict[str, torch.fx.GraphModule] = {}

    def keep(name: str):
        def compiler(gm: torch.fx.GraphModule, _inputs: list) -> object:
            graphs[name] = gm
            return make_boxed_func(gm.forward)
        return compiler

    backend = aot_autograd(fw_compiler=keep("fw"), bw_compiler=keep("bw"),
                           partition_fn=min_cut_rematerialization_partition)
    torch._dynamo.reset()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = torch.compile(model, backend=backend)(idx, idx).loss
    loss.backward()
    return graphs


def test_compiled_moe_casts_expert_weights_in_the_forward_only_and_saves_them():
    cfg = ModelConfig(vocab_size=64, d_model=32, n_layers=2, n_heads=2, d_ff=64,
                      max_seq_len=16, n_experts=4, experts_per_token=2, moe_d_ff=32)
    model = Transformer(cfg)
    graphs = _aot_graphs(model, torch.randint(0, 64, (2, 16)))

    def casts(gm: torch.fx.GraphModule) -> int:
        return sum(n.op == "call_function" and "cast_saved" in str(n.target)
                   for n in gm.graph.nodes)

    assert casts(graphs["fw"]) == 2 * cfg.n_layers  # w13 and w2 of every MoE layer
    assert casts(graphs["bw"]) == 0
    # the backward receives the bf16 expert weights from the forward (as the transposed
    # views its grouped GEMMs read)
    saved = [tuple(n.meta["val"].shape) for n in graphs["bw"].graph.nodes
             if n.op == "placeholder" and n.meta["val"].dtype == torch.bfloat16
             and n.meta["val"].dim() == 3 and n.meta["val"].shape[0] == cfg.n_experts]
    expert_shapes = {tuple(model.layers[0].ffn.w13.shape), tuple(model.layers[0].ffn.w2.shape)}
    assert len(saved) == 2 * cfg.n_layers
    assert {tuple(sorted(s)) for s in saved} == {tuple(sorted(s)) for s in expert_shapes}
