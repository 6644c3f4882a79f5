"""Training-throughput benchmarks of model/ on one GPU (run through the device tool).

    PYTHONUNBUFFERED=1 python benchmarks/model_bench.py --out $OUT/model_bench.json

Each case times full training steps (forward, loss, backward, gradient clipping, fused AdamW
step) on synthetic random token batches at sequence length 2048 under bf16 autocast, after
warm-up steps that include ``torch.compile``, back to back as the trainer's loop runs them:
each step's loss and gradient norm are read on the host one step late (``HostCopy``), and a
step's time runs from the previous step's end to its own (``--host-sync``: the host waits
for every step, the measurement before the trainer read losses late). In our cases, float32
matmuls (only the MoE router's, under autocast) run on TF32 as the trainer runs them
(``train.tf32``; ``--no-tf32``: full float32); the ``transformers`` Llama cases keep PyTorch's
default, full float32 (their rotary angles come from a float32 matmul). ``--variant NAME``
applies one of ``block_kernels.py``'s implementation variants to every case (e.g.
``rope-autograd``, the attention's RoPE before ``model.rope.rope_qkv``). Cases:

* dense ~125M and ~350M (presets "125m", "350m"): tokens/s and MFU;
* the same configs as ``transformers.LlamaForCausalLM`` with SDPA attention, same batch:
  tokens/s ratio ours / Llama (Llama eager, as it is normally used, and also compiled);
* MoE 8 experts top-2 ("moe-8x2-125m", expert width half the dense d_ff, so the same active
  parameters as "125m") against dense "125m": tokens/s ratio;
* "...-cudnn" cases: the same with cuDNN attention first in SDPA's backend order
  (``model.attention.sdpa_backend``; torch 2.11 already picks it on an H100), and 350M at
  batch 24;
* "...-bf16res" cases: 350M with ``fp32_residual=False`` (the residual stream in bf16 under
  autocast, Megatron-LM's default), at batch 16 and 24.

MFU = flops_per_token * tokens/s / peak (989e12 on H100 and H200, ``model.train.peak_flops_of``), with flops_per_token = 6 N + 12 L H Q T (PaLM
appendix B; N = active non-embedding parameters incl. the LM head; see
``Transformer.flops_per_token``) and 989 TFLOP/s the H100 SXM dense bf16 peak.
Results go to the JSON file as they are measured; a table is printed at the end.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from model.model import ModelConfig, Transformer, config_from_preset  # noqa: E402
from model.train import (  # noqa: E402
    HostCopy,
    TrainConfig,
    build_optimizer,
    finish_step,
    float32_matmuls,
    peak_flops_of,
)

SEQ = 2048



def time_steps(step: Any, warmup: int, steps: int, on_gpu: bool,
               host_sync: bool = False) -> tuple[list[float], float, Any]:
    """Run ``step(i)`` ``warmup`` times, then time ``steps`` calls back to back; return (sorted
    step seconds, warm-up seconds, last return value). On a GPU a step's time runs from the
    previous step's end event to its own (the first from a start event), so the device
    idling between steps counts; ``host_sync`` makes the host wait for each step's end
    before starting the next (as a loop that reads every step's loss at once would)."""
    t0 = time.perf_counter()
    out = None
    for i in range(warmup):
        out = step(i)
    if on_gpu:
        torch.cuda.synchronize()
    warm_s = time.perf_counter() - t0
    if not on_gpu:
        times = []
        for i in range(steps):
            t = time.perf_counter()
            out = step(warmup + i)
            times.append(time.perf_counter() - t)
        return sorted(times), warm_s, out
    events = [torch.cuda.Event(enable_timing=True) for _ in range(steps + 1)]
    events[0].record()
    for i in range(steps):
        out = step(warmup + i)
        events[i + 1].record()
        if host_sync:
            events[i + 1].synchronize()
    torch.cuda.synchronize()
    times = [a.elapsed_time(b) / 1e3 for a, b in zip(events, events[1:], strict=False)]
    return sorted(times), warm_s, out


def llama_from(cfg: ModelConfig) -> torch.nn.Module:
    """transformers' LlamaForCausalLM with the same shapes as our ModelConfig, SDPA attention."""
    from transformers import LlamaConfig, LlamaForCausalLM

    lc = LlamaConfig(vocab_size=cfg.vocab_size, hidden_size=cfg.d_model,
                     intermediate_size=cfg.d_ff, num_hidden_layers=cfg.n_layers,
                     num_attention_heads=cfg.n_heads, num_key_value_heads=cfg.n_kv_heads,
                     max_position_embeddings=cfg.max_seq_len, rms_norm_eps=cfg.norm_eps,
                     rope_theta=cfg.rope_theta, tie_word_embeddings=cfg.tie_embeddings,
                     attention_bias=False, mlp_bias=False, attn_implementation="sdpa")
    lc._attn_implementation = "sdpa"
    return LlamaForCausalLM(lc)


def bench_case(label: str, cfg: ModelConfig, kind: str, batch: int, steps: int, warmup: int,
               compile_: bool, sdpa: str = "auto", compile_mode: str | None = None,
               profile_top: int = 0, host_sync: bool = False) -> dict[str, Any]:
    """Time ``steps`` training steps of our model (``kind="ours"``) or the equivalent Llama;
    ``sdpa="cudnn"`` puts cuDNN attention first in SDPA's backend order for the case;
    ``compile_mode`` is ``torch.compile``'s ``mode``; ``profile_top > 0`` profiles one more
    step and records its ``profile_top`` largest kernels; ``host_sync``: see :func:`time_steps`."""
    if sdpa != "auto":
        from model.attention import sdpa_backend

        with sdpa_backend(sdpa):
            res = bench_case(label, cfg, kind, batch, steps, warmup, compile_,
                             compile_mode=compile_mode, profile_top=profile_top,
                             host_sync=host_sync)
        res["sdpa"] = sdpa
        return res
    torch._dynamo.reset()  # a new trace per case: the attention kernel is chosen while tracing
    torch.manual_seed(0)
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = (Transformer(cfg) if kind == "ours" else llama_from(cfg)).to(dev)
    n_params = sum(p.numel() for p in model.parameters())
    opt = build_optimizer(model, TrainConfig(lr=1e-4, weight_decay=0.1), dev)
    fwd = torch.compile(model, mode=compile_mode) if compile_ else model
    params = [p for p in model.parameters() if p.requires_grad]
    vocab = cfg.vocab_size
    seq = min(SEQ, cfg.max_seq_len)
    batches = [torch.randint(0, vocab, (batch, seq + 1), device=dev) for _ in range(4)]

    pending: list[HostCopy] = []

    def step(i: int) -> HostCopy:
        """A training step as the trainer's loop runs it: the previous step's loss and
        gradient norm are read on the host once this step's forward/backward is queued."""
        b = batches[i % len(batches)]
        x, y = b[:, :-1], b[:, 1:]
        with torch.autocast(dev.type, dtype=torch.bfloat16):
            if kind == "ours":
                loss = fwd(x, y).loss
            else:  # transformers shifts labels itself
                loss = fwd(input_ids=b[:, :-1], labels=b[:, :-1]).loss
        loss.backward()
        if pending:
            pending.pop().get()
        pending.append(finish_step(opt, params, loss.detach().float().reshape(1), 1.0)[0])
        return pending[-1]

    on_gpu = dev.type == "cuda"
    if on_gpu:
        torch.cuda.reset_peak_memory_stats()
    times, warm_s, last = time_steps(step, warmup, steps, on_gpu, host_sync)
    med = times[len(times) // 2]
    tok_s = batch * seq / med
    with torch.device("meta"):  # same FLOP count for both implementations of one config
        ref = Transformer(cfg)
    fpt = ref.flops_per_token(seq)
    res = {"case": label, "kind": kind, "compiled": compile_, "batch": batch, "seq": seq,
           "params": n_params, "active_nonemb_params": ref.num_params(active=True, embedding=False),
           "flops_per_token": fpt, "median_step_s": med, "min_step_s": times[0],
           "max_step_s": times[-1], "tokens_per_s": tok_s,
           "mfu": fpt * tok_s / peak if (peak := peak_flops_of(torch.device("cuda"))
                                         if on_gpu else None) else None,
           "warmup_s": warm_s,
           "peak_mem_gib": torch.cuda.max_memory_allocated() / 2**30 if on_gpu else 0.0,
           "final_loss": last.get()[0], "host_sync_each_step": host_sync}
    if compile_mode:
        res["compile_mode"] = compile_mode
    if profile_top and on_gpu:
        from model_scaling import profile_step

        res["profile"] = profile_step(lambda: step(warmup + steps), True, profile_top)
    if kind == "llama":
        res["attn_implementation"] = model.config._attn_implementation
    return res  # model, optimizer and batches are freed with this frame


_CFGS: dict[str, Any] = {}


def main() -> int:
    """Run the cases that fit in the time budget; write JSON and print a table."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="model_bench.json")
    ap.add_argument("--budget-s", type=float, default=420.0)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--only", default="", help="comma-separated case names")
    ap.add_argument("--compile-mode", default=None,
                    help="torch.compile mode for every compiled case (e.g. max-autotune-no-cudagraphs)")
    ap.add_argument("--inductor", action="append", default=[], metavar="KEY=VALUE",
                    help="set torch._inductor.config.KEY (Python literal VALUE) for every case")
    ap.add_argument("--host-sync", action="store_true",
                    help="wait for every step before the next (the timing before the trainer "
                         "read each step's loss a step late)")
    ap.add_argument("--no-tf32", action="store_true",
                    help="float32 matmuls (the MoE router's) in full float32, as train.tf32: "
                         "false runs them (default: TF32, the trainer's default)")
    ap.add_argument("--profile-top", type=int, default=0,
                    help="profile one more step per case and record its N largest kernels")
    ap.add_argument("--variant", default="base",
                    help="an implementation variant of benchmarks/block_kernels.py applied to "
                         "every case, e.g. rope-autograd (the attention's RoPE before "
                         "model.rope.rope_qkv) for a whole-model A/B")
    ap.add_argument("--smoke", action="store_true",
                    help="tiny shapes on whatever device there is (checks the script itself)")
    args = ap.parse_args()
    t_start = time.perf_counter()
    if args.variant == "bf16res":
        raise SystemExit("--variant bf16res: run the ...-bf16res cases instead")
    if args.variant != "base":
        from block_kernels import apply_variant

        apply_variant(args.variant)
    import ast

    import torch._inductor.config as inductor_config
    import transformers

    for kv in args.inductor:
        key, _, value = kv.partition("=")
        setattr(inductor_config, key, ast.literal_eval(value))

    gpu = torch.cuda.is_available()
    env = {"device": torch.cuda.get_device_name(0) if gpu else "cpu", "variant": args.variant,
           "torch": torch.__version__,
           "transformers": transformers.__version__, "cuda": torch.version.cuda}
    n = 8192 if gpu else 256
    a = torch.randn(n, n, device="cuda" if gpu else "cpu", dtype=torch.bfloat16)
    b = torch.randn_like(a)
    for _ in range(3):
        a @ b
    if gpu:
        torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(20):
        a @ b
    if gpu:
        torch.cuda.synchronize()
    env["matmul_bf16_tflops"] = 20 * 2 * n**3 / (time.perf_counter() - t) / 1e12
    del a, b
    print(json.dumps(env), flush=True)

    if args.smoke:
        small = dict(vocab_size=512, d_model=64, n_layers=2, n_heads=4, d_ff=128, max_seq_len=64)
        _CFGS.update({"350m": ModelConfig(**small), "125m": ModelConfig(**small),
                      "350m-bf16res": ModelConfig(**small, fp32_residual=False),
                      "moe-8x2-125m": ModelConfig(**small, n_experts=8, experts_per_token=2,
                                                  moe_d_ff=64)})
    else:
        _CFGS.update({"350m": config_from_preset("350m", vocab_size=50304),
                      "350m-bf16res": config_from_preset("350m", vocab_size=50304,
                                                         fp32_residual=False),
                      "125m": config_from_preset("125m", vocab_size=50304),
                      "moe-8x2-125m": config_from_preset("moe-8x2-125m", vocab_size=50304)})
    # (label, config name, kind, compile, batch, estimated seconds)
    cases = [("ours-350m", "350m", "ours", True, 8, 100),
             ("llama-350m", "350m", "llama", False, 8, 30),
             ("ours-125m", "125m", "ours", True, 16, 70),
             ("moe-8x2-125m", "moe-8x2-125m", "ours", True, 16, 90),
             ("llama-125m", "125m", "llama", False, 16, 25),
             ("ours-350m-b16", "350m", "ours", True, 16, 90),
             ("ours-350m-b16-cudnn", "350m", "ours", True, 16, 90),
             ("ours-350m-b24", "350m", "ours", True, 24, 100),
             ("ours-350m-b24-cudnn", "350m", "ours", True, 24, 100),
             ("ours-350m-b16-bf16res", "350m-bf16res", "ours", True, 16, 90),
             ("ours-350m-b24-bf16res", "350m-bf16res", "ours", True, 24, 100),
             ("ours-125m-cudnn", "125m", "ours", True, 16, 70),
             ("moe-8x2-125m-cudnn", "moe-8x2-125m", "ours", True, 16, 90),
             ("ours-350m-eager", "350m", "ours", False, 8, 30),
             ("llama-350m-compiled", "350m", "llama", True, 8, 100)]
    only = {s for s in args.only.split(",") if s}
    results: list[dict[str, Any]] = []
    out = Path(args.out)
    for label, cname, kind, comp, batch, est in cases:
        if only and label not in only:
            continue
        left = args.budget_s - (time.perf_counter() - t_start)
        if left < est:
            print(f"skip {label}: {left:.0f}s left < estimated {est}s", flush=True)
            results.append({"case": label, "skipped": "time budget"})
            continue
        print(f"running {label} ...", flush=True)
        try:
            tf32 = kind == "ours" and not args.no_tf32  # as our trainer runs bf16 autocast
            with float32_matmuls(tf32):
                r = bench_case(label, _CFGS[cname], kind, batch, args.steps, 3,
                               comp and not args.smoke, "cudnn" if "cudnn" in label else "auto",
                               compile_mode=args.compile_mode, profile_top=args.profile_top,
                               host_sync=args.host_sync)
            r["tf32"] = tf32
            if args.inductor:
                r["inductor"] = args.inductor
            gc.collect()
            torch.cuda.empty_cache()
        except torch.cuda.OutOfMemoryError as e:
            r = {"case": label, "error": f"OOM: {str(e)[:200]}"}
            gc.collect()
            torch.cuda.empty_cache()
        except Exception as e:  # record and go on to the next case
            r = {"case": label, "error": f"{type(e).__name__}: {str(e)[:500]}"}
        results.append(r)
        print(json.dumps(r), flush=True)
        out.write_text(json.dumps({"env": env, "results": results}, indent=2))

    by = {r["case"]: r for r in results if "tokens_per_s" in r}
    ratios = {}
    for size in ("350m", "125m"):
        if f"ours-{size}" in by and f"llama-{size}" in by:
            ratios[f"ours/llama {size}"] = by[f"ours-{size}"]["tokens_per_s"] / by[f"llama-{size}"]["tokens_per_s"]
    if "ours-350m" in by and "llama-350m-compiled" in by:
        ratios["ours/llama-compiled 350m"] = (by["ours-350m"]["tokens_per_s"]
                                              / by["llama-350m-compiled"]["tokens_per_s"])
    if "moe-8x2-125m" in by and "ours-125m" in by:
        ratios["moe/dense 125m"] = by["moe-8x2-125m"]["tokens_per_s"] / by["ours-125m"]["tokens_per_s"]
    if "moe-8x2-125m-cudnn" in by and "ours-125m-cudnn" in by:
        ratios["moe/dense 125m (cudnn attention)"] = (by["moe-8x2-125m-cudnn"]["tokens_per_s"]
                                                      / by["ours-125m-cudnn"]["tokens_per_s"])
    for b in ("16", "24"):
        if f"ours-350m-b{b}-cudnn" in by and f"ours-350m-b{b}" in by:
            ratios[f"cudnn/default attention 350m b{b}"] = (
                by[f"ours-350m-b{b}-cudnn"]["tokens_per_s"] / by[f"ours-350m-b{b}"]["tokens_per_s"])
    out.write_text(json.dumps({"env": env, "results": results, "ratios": ratios}, indent=2))
    print(f"\n{env['device']} | torch {env['torch']} | transformers {env['transformers']} "
          f"| matmul {env['matmul_bf16_tflops']:.0f} TFLOP/s")
    print(f"{'case':<18}{'params':>10}{'batch':>6}{'step ms':>9}{'tok/s':>11}{'MFU':>7}{'mem GiB':>9}")
    for r in results:
        if "tokens_per_s" in r:
            print(f"{r['case']:<18}{r['params'] / 1e6:>9.1f}M{r['batch']:>6}"
                  f"{1e3 * r['median_step_s']:>9.1f}{r['tokens_per_s']:>11,.0f}"
                  f"{100 * (r['mfu'] or 0):>6.1f}%{r['peak_mem_gib']:>9.1f}")
        else:
            print(f"{r['case']:<18} {r.get('error') or r.get('skipped')}")
    for k, v in ratios.items():
        print(f"{k}: {v:.3f}")
    print(f"total {time.perf_counter() - t_start:.0f}s")
    return 0 if all(math.isfinite(r.get("final_loss", 0.0)) for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
