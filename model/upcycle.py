"""Sparse upcycling: an MoE checkpoint from a dense one (Komatsuzaki et al. 2023).

    python -m model.upcycle DENSE_CKPT [OUT_CKPT] --experts N [--top-k K] [--moe-every M]
        [--noise 0.01] [--router-init normal|zero] [--seed 0] [--set key=value ...]

``OUT_CKPT`` defaults to ``upcycled-NxK.pt`` in the current directory (never inside the dense
run, whose checkpoint rotation could delete it).

Every feed-forward that becomes a mixture of experts (layers ``moe_every - 1``,
``2 * moe_every - 1``, ...) gets ``N`` copies of the dense SwiGLU as its experts (``moe_d_ff``
= the dense ``d_ff``), each plus Gaussian noise of ``noise`` times the standard deviation of
the copied matrix, and a fresh router (normal with the model's ``init_std``, or zeros: a
uniform router). Everything else is copied unchanged. ``--set`` overrides other model config
fields of the MoE (``router_balance=bias``, ``z_loss_coef=0``, ...). With a uniform router,
zero noise and ``norm_topk_prob`` (the default) the upcycled model computes the dense model's
function: each token's ``k`` chosen experts are the same MLP with weights ``1/k``.

The output holds ``model`` (weights) and ``model_config`` like the trainer's checkpoints, at
step 0 and with no optimizer state: start training from it with ``train.init_from: OUT_CKPT``
(and the upcycled config as the ``model:`` section), or load it with
``model.generate.load_checkpoint``.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

import torch

from model.config import ConfigError, parse_set_options
from model.generate import resolve_checkpoint
from model.model import ModelConfig, Transformer


def upcycle_state(dense_sd: dict[str, torch.Tensor], dense_cfg: ModelConfig, n_experts: int,
                  top_k: int = 2, moe_every: int = 1, noise: float = 0.01,
                  router_init: str = "normal", seed: int = 0,
                  overrides: dict[str, Any] | None = None
                  ) -> tuple[dict[str, torch.Tensor], ModelConfig]:
    """MoE weights and config from a dense model's state dict and config (see the module
    docstring). Raises ``ValueError`` for an MoE input or bad options."""
    if dense_cfg.n_experts:
        raise ValueError(f"the checkpoint is already a mixture of {dense_cfg.n_experts} experts")
    if router_init not in ("normal", "zero"):
        raise ValueError(f"router_init must be 'normal' or 'zero', not {router_init!r}")
    if noise < 0:
        raise ValueError("noise must be >= 0")
    cfg = ModelConfig.from_dict({**dense_cfg.to_dict(), "n_experts": n_experts,
                                 "experts_per_token": top_k, "moe_every": moe_every,
                                 "moe_d_ff": dense_cfg.d_ff, **(overrides or {})})
    if cfg.n_shared_experts:
        raise ValueError("upcycling makes routed experts only: n_shared_experts must be 0")
    if cfg.moe_d_ff != dense_cfg.d_ff:
        raise ValueError(f"moe_d_ff must equal the dense d_ff ({dense_cfg.d_ff}) to copy the MLP")
    gen = torch.Generator().manual_seed(seed)

    def noisy(w: torch.Tensor) -> torch.Tensor:
        copies = w.float().unsqueeze(0).repeat(n_experts, 1, 1)
        if noise:
            copies += noise * w.float().std() * torch.randn(copies.shape, generator=gen)
        return copies.to(w.dtype)

    with torch.device("meta"):
        target = Transformer(cfg).state_dict()
    out: dict[str, torch.Tensor] = {}
    for i in range(cfg.n_layers):
        if not cfg.is_moe_layer(i):
            continue
        p = f"layers.{i}.ffn."
        w13, w2 = dense_sd[p + "w13.weight"], dense_sd[p + "w2.weight"]  # [2f, d], [d, f]
        out[p + "w13"] = noisy(w13.t())  # experts compute x @ w13[e]
        out[p + "w2"] = noisy(w2.t())
        router = torch.zeros(n_experts, cfg.d_model, dtype=w13.dtype)
        if router_init == "normal":
            router.normal_(0.0, cfg.init_std, generator=gen)
        out[p + "router.weight"] = router
        out[p + "expert_bias"] = torch.zeros(n_experts)
        out[p + "tokens_per_expert"] = torch.zeros(n_experts)
    for name in target:
        if name not in out:
            if name not in dense_sd:
                raise ValueError(f"dense checkpoint lacks {name}")
            out[name] = dense_sd[name]
    return out, cfg


def main(argv: list[str] | None = None) -> int:
    """CLI (see the module docstring)."""
    ap = argparse.ArgumentParser(prog="python -m model.upcycle",
                                 description=__doc__.split("\n")[0])
    ap.add_argument("dense", help="dense checkpoint: state.pt, step folder or run directory")
    ap.add_argument("out", nargs="?", default=None,
                    help="output checkpoint file (default: ./upcycled-NxK.pt)")
    ap.add_argument("--experts", type=int, required=True, help="experts per MoE layer")
    ap.add_argument("--top-k", type=int, default=2, help="experts per token (default 2)")
    ap.add_argument("--moe-every", type=int, default=1, help="every M-th layer becomes MoE")
    ap.add_argument("--noise", type=float, default=0.01,
                    help="expert noise std relative to each copied matrix's std (default 0.01)")
    ap.add_argument("--router-init", choices=("normal", "zero"), default="normal",
                    help="fresh router: normal(0, init_std) or zero (uniform routing)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override an MoE config field, e.g. --set router_balance=bias")
    args = ap.parse_args(argv)
    try:
        overrides = parse_set_options(args.set)
    except ConfigError as exc:
        ap.error(str(exc))
    src = resolve_checkpoint(args.dense)
    state = torch.load(src, map_location="cpu", weights_only=True)
    if "model_config" not in state or "model" not in state:
        raise SystemExit(f"{src}: not a model.train checkpoint (needs model and model_config)")
    try:
        sd, cfg = upcycle_state(state["model"], ModelConfig.from_dict(state["model_config"]),
                                args.experts, args.top_k, args.moe_every, args.noise,
                                args.router_init, args.seed, overrides)
    except ValueError as e:
        raise SystemExit(f"{src}: {e}") from e
    out = Path(args.out or f"upcycled-{args.experts}x{args.top_k}.pt")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    torch.save({"step": 0, "model": sd, "model_config": cfg.to_dict(),
                "upcycled_from": str(src)}, tmp)
    os.replace(tmp, out)
    with torch.device("meta"):
        moe = Transformer(cfg)
    print(f"wrote {out}: {cfg.n_experts} experts top-{cfg.experts_per_token} on "
          f"{sum(cfg.is_moe_layer(i) for i in range(cfg.n_layers))} layers, "
          f"{moe.num_params() / 1e6:.2f}M params "
          f"({moe.num_params(active=True) / 1e6:.2f}M active)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
