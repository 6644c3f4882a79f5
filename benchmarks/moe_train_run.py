"""A short mixture-of-experts training run at 350M active parameters on one GPU.

    PYTHONUNBUFFERED=1 python benchmarks/moe_train_run.py --steps 200 --out $OUT/moe_run.json

Model: the "350m" shape (d_model 1024, 24 layers, 16 heads, vocabulary 50,304) with every
feed-forward a mixture of 16 fine-grained experts of width 704, top-3, plus one shared expert
of width 704: the active feed-forward width is 4 x 704 = 2816, the dense 350M's d_ff, so the
active parameters equal the dense model's plus the routers. Capacity factor 1.25 (pairs over
an expert's capacity dropped), softmax router with the Switch aux loss.

Data: a synthetic first-order Markov chain over 4,096 token ids (each id has 4 equally likely
successors: the best possible loss is ln 4 = 1.386 nats), generated on the GPU as a pool of
fresh sequences that no step repeats, so the loss has somewhere to go and the data costs no
host time. Steps: full training steps as ``model.train`` runs them (bf16 autocast,
``torch.compile``, fused AdamW with weight decay on matrices, warmup + cosine learning rate,
gradient clipping at 1.0), timed with CUDA events after the compile steps. Prints loss,
tokens/s, MFU (989 TFLOP/s peak) and the dropped fraction per MoE layer every ``--log-every``
steps.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from model.model import Transformer, config_from_preset  # noqa: E402
from model.train import (  # noqa: E402
    TrainConfig,
    build_optimizer,
    clip_gradients,
    lr_at,
    optimizer_step,
    peak_flops_of,
)

# MFU's denominator from the card's name; NaN (MFU printed as nan) for unknown cards
PEAK = (peak_flops_of(torch.device("cuda")) if torch.cuda.is_available() else None) or float("nan")


def markov_pool(n_seq: int, seq: int, n_ids: int, branch: int, seed: int,
                device: torch.device) -> torch.Tensor:
    """``[n_seq, seq]`` token ids walked along a random successor table ``[n_ids, branch]``."""
    g = torch.Generator(device=device).manual_seed(seed)
    succ = torch.randint(1, n_ids, (n_ids, branch), generator=g, device=device)
    out = torch.empty(n_seq, seq, dtype=torch.long, device=device)
    out[:, 0] = torch.randint(1, n_ids, (n_seq,), generator=g, device=device)
    for t in range(1, seq):
        pick = torch.randint(0, branch, (n_seq,), generator=g, device=device)
        out[:, t] = succ[out[:, t - 1], pick]
    return out


def main() -> int:
    """Train, print the log lines and write a JSON summary."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=2048)
    ap.add_argument("--log-every", type=int, default=20)
    ap.add_argument("--capacity-factor", type=float, default=1.25)
    ap.add_argument("--budget-s", type=float, default=150.0, help="stop early after this")
    ap.add_argument("--out", default="")
    args = ap.parse_args()
    t_start = time.perf_counter()
    dev = torch.device("cuda")
    torch.manual_seed(0)
    cfg = config_from_preset("350m", vocab_size=50304, n_experts=16, experts_per_token=3,
                             moe_d_ff=704, n_shared_experts=1,
                             moe_capacity_factor=args.capacity_factor)
    model = Transformer(cfg).to(dev)
    tcfg = TrainConfig(lr=6e-4, warmup_steps=20, max_steps=args.steps, weight_decay=0.1)
    opt = build_optimizer(model, tcfg, dev)
    fwd = torch.compile(model)
    pool = markov_pool(args.steps * args.batch, args.seq + 1, 4096, 4, 0, dev)
    fpt = model.flops_per_token(args.seq)
    info = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__,
            "params": model.num_params(),
            "active_nonemb_params": model.num_params(active=True, embedding=False),
            "flops_per_token": fpt, "config": cfg.to_dict(), "batch": args.batch,
            "seq": args.seq}
    print(json.dumps({k: v for k, v in info.items() if k != "config"}), flush=True)
    params = [p for p in model.parameters() if p.requires_grad]
    log, times = [], []
    for step in range(1, args.steps + 1):
        for g in opt.param_groups:
            g["lr"] = lr_at(step - 1, tcfg)
        b = pool[(step - 1) * args.batch:step * args.batch]
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            out = fwd(b[:, :-1], b[:, 1:])
        out.loss.backward()
        clip_gradients(opt, params, tcfg.grad_clip)
        optimizer_step(opt, params)
        stats = model.consume_moe_stats()
        end.record()
        if step > 3:  # the first steps include compilation
            end.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
        if step % args.log_every == 0 or step == args.steps:
            dropped = stats.dropped.tolist()
            tok_s = args.batch * args.seq / (sum(times[-10:]) / len(times[-10:]))
            rec = {"step": step, "loss": float(out.loss), "ce": float(out.ce_loss),
                   "aux": float(out.aux_loss), "tokens_per_s": tok_s,
                   "mfu": fpt * tok_s / PEAK,
                   "dropped_mean": sum(dropped) / len(dropped), "dropped_max": max(dropped),
                   "dropped_per_layer": dropped,
                   "max_load": float(stats.load.max(-1).values.mean() * stats.load.shape[-1])}
            log.append(rec)
            print(f"step {step} | loss {rec['loss']:.4f} | ce {rec['ce']:.4f} | "
                  f"{tok_s:,.0f} tok/s | mfu {100 * rec['mfu']:.1f}% | dropped "
                  f"{100 * rec['dropped_mean']:.2f}% (max layer {100 * rec['dropped_max']:.2f}%)"
                  f" | max/mean load {rec['max_load']:.2f}", flush=True)
            if time.perf_counter() - t_start > args.budget_s:
                print(f"stopping at step {step}: budget {args.budget_s}s", flush=True)
                break
    times.sort()
    med = times[len(times) // 2]
    summary = {**info, "steps_run": log[-1]["step"], "median_step_s": med,
               "tokens_per_s": args.batch * args.seq / med,
               "mfu": fpt * args.batch * args.seq / med / PEAK,
               "peak_mem_gib": torch.cuda.max_memory_allocated() / 2**30, "log": log,
               "wall_s": time.perf_counter() - t_start}
    print(json.dumps({k: v for k, v in summary.items() if k not in ("config", "log")}),
          flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(summary, indent=2))
    return 0 if math.isfinite(log[-1]["loss"]) else 1


if __name__ == "__main__":
    sys.exit(main())
