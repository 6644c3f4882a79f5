"""Tests of model/casts.py: ``cast_saved`` is ``Tensor.to`` in value and gradient; a compiled
MoE step runs it in its forward graph only, once per expert matrix, and hands its bf16 output
to the backward as a saved tensor. (The duplicate cast kernels it removes are a choice of
inductor's Triton backend, not reproducible on CPU; that is measured in
``benchmarks/RESULTS.md``.)"""

from __future__ import annotations

import pytest
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


@pytest.mark.parametrize("grouped_mm", [True, False])
def test_compiled_moe_casts_expert_weights_in_the_forward_only_and_saves_them(grouped_mm: bool):
    """Both expert paths: grouped GEMMs, and the padded batched matmuls."""
    cfg = ModelConfig(vocab_size=64, d_model=32, n_layers=2, n_heads=2, d_ff=64,
                      max_seq_len=16, n_experts=4, experts_per_token=2, moe_d_ff=40,
                      grouped_mm=grouped_mm)
    model = Transformer(cfg)
    assert model.layers[0].ffn.use_grouped_mm == (grouped_mm and hasattr(torch, "_grouped_mm"))
    graphs = _aot_graphs(model, torch.randint(0, 64, (2, 10)))  # 20 tokens: no [E, 20, .]
    # activation has an expert weight's shape

    def casts(gm: torch.fx.GraphModule) -> int:
        return sum(n.op == "call_function" and "cast_saved" in str(n.target)
                   for n in gm.graph.nodes)

    assert casts(graphs["fw"]) == 2 * cfg.n_layers  # w13 and w2 of every MoE layer
    assert casts(graphs["bw"]) == 0
    # the backward receives the bf16 expert weights from the forward (as the transposed
    # views its matmuls read)
    expert_shapes = {tuple(sorted(model.layers[0].ffn.w13.shape)),
                     tuple(sorted(model.layers[0].ffn.w2.shape))}
    saved = [n for n in graphs["bw"].graph.nodes
             if n.op == "placeholder" and n.meta["val"].dtype == torch.bfloat16
             and tuple(sorted(n.meta["val"].shape)) in expert_shapes]
    assert len(saved) == 2 * cfg.n_layers
