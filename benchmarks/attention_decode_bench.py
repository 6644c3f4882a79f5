"""Attention options on fused kernels, and compiled decoding, on one GPU.

    PYTHONUNBUFFERED=1 python benchmarks/attention_decode_bench.py --out $OUT/attention_decode.json

Part ``decode`` (preset "125m", bf16, batch 1, random weights, a ``--context``-token prompt,
``--new-tokens`` greedy tokens): tokens/s of the eager decoding loop (``generate``, dynamic
KV cache, one model call per token) against :class:`model.generate.StaticDecoder` with the
one-token step replayed from a CUDA graph, eager step (``cuda_graph``) and compiled by
``torch.compile`` first (``compiled``). End-to-end tokens/s include the prefill and token
selection (as ``benchmarks/generate_bench.py`` counts them); ``step`` tokens/s time the
one-token step alone. Also reported: the one-time setup (compile + capture) and the fraction
of tokens equal to the eager ones (bf16 kernels of different fusion can break near-ties
differently; the ``gpu`` tests check exact equality in float32).

Part ``attention`` (preset "350m", sequence 2048, batch 8, bf16 autocast): training steps
(forward, loss, backward, clipping, fused AdamW) with each attention option: ``causal``
(default: SDPA FlashAttention), ``alibi``, ``sliding`` (1024-token window on every layer) and
``docs`` (document masking, documents of 512 tokens on average, the block mask rebuilt every
step as the trainer does) through FlexAttention, and ``alibi-dense`` (``attn_impl: sdpa``, the
dense-bias path these options used before). Each block is compiled (``--compile blocks``;
identical blocks share the compiled code, which keeps compile time to one block per case);
embedding, LM head and loss run eagerly. Ratio: option tokens/s over causal tokens/s.

Results go to the JSON file as they are measured; cases that would overrun ``--budget-s``
are skipped and say so.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from model_bench import time_steps  # noqa: E402  (benchmarks/, the script's folder)

from model.generate import StaticDecoder, generate  # noqa: E402
from model.model import KVCache, ModelConfig, Transformer, config_from_preset  # noqa: E402
from model.train import TrainConfig, build_optimizer  # noqa: E402


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize()


def _timed(fn: Any, dev: torch.device) -> tuple[Any, float]:
    _sync(dev)
    t = time.perf_counter()
    out = fn()
    _sync(dev)
    return out, time.perf_counter() - t


# ---- decoding ---------------------------------------------------------------------------------


def decode_cases(cfg: ModelConfig, context: int, new_tokens: int, dev: torch.device,
                 dtype: torch.dtype, modes: list[str]) -> list[dict[str, Any]]:
    """Batch-1 greedy decoding: eager loop against StaticDecoder modes."""
    torch.manual_seed(0)
    model = Transformer(cfg).to(device=dev, dtype=dtype).eval()
    g = torch.Generator().manual_seed(0)
    prompt = torch.randint(0, cfg.vocab_size, (1, context), generator=g)
    idx = prompt.to(dev)
    results = []
    generate(model, prompt.tolist(), new_tokens, temperature=0)  # warm-up
    eager_tokens, secs = _timed(lambda: generate(model, prompt.tolist(), new_tokens,
                                                 temperature=0)[0], dev)
    cache = KVCache(cfg, 1, context + new_tokens + 64, device=dev, dtype=dtype)
    with torch.no_grad():
        model(idx, cache=cache)
        tok = idx[:, -1:]
        _, step_s = _timed(lambda: [model(tok, cache=cache) for _ in range(64)], dev)
    results.append({"case": "decode-eager", "tokens_per_s": new_tokens / secs,
                    "step_tokens_per_s": 64 / step_s, "seconds": secs, "setup_s": 0.0,
                    "agreement": 1.0})
    print(json.dumps(results[-1]), flush=True)
    for mode in modes:
        try:
            t = time.perf_counter()
            dec = StaticDecoder(model, 1, context + new_tokens, compile=mode == "compiled",
                                cuda_graph=dev.type == "cuda")
            dec.generate(idx, new_tokens)  # warm-up (and, for the eager step, compile)
            _sync(dev)
            setup = time.perf_counter() - t
            out, secs = _timed(lambda dec=dec: dec.generate(idx, new_tokens)[0].tolist(), dev)
            n_steps = min(64, new_tokens - 1)  # within the buffer after a 1-token generate
            dec.generate(idx, 1)  # prefill only, then time the step alone
            _, step_s = _timed(lambda dec=dec, n=n_steps: [dec.step() for _ in range(n)], dev)
            same = sum(a == b for a, b in zip(out, eager_tokens, strict=True)) / new_tokens
            r = {"case": f"decode-{mode}", "tokens_per_s": new_tokens / secs,
                 "step_tokens_per_s": n_steps / step_s, "seconds": secs, "setup_s": setup,
                 "agreement": same}
            del dec
        except Exception as e:  # record and go on
            r = {"case": f"decode-{mode}", "error": f"{type(e).__name__}: {str(e)[:600]}"}
        results.append(r)
        print(json.dumps(r), flush=True)
    return results


# ---- attention options in training ------------------------------------------------------------


def train_case(label: str, cfg: ModelConfig, batch: int, seq: int, steps: int, warmup: int,
               doc_len: int | None, compile_mode: str, dev: torch.device) -> dict[str, Any]:
    """Median training-step time of ``cfg`` on random tokens (bf16 autocast)."""
    torch.manual_seed(0)
    model = Transformer(cfg).to(dev)
    opt = build_optimizer(model, TrainConfig(lr=1e-4, weight_decay=0.1), dev)
    fwd: Any = model
    if compile_mode == "blocks":
        for block in model.layers:
            block.compile()
    elif compile_mode == "model":
        fwd = torch.compile(model)
    batches = [torch.randint(0, cfg.vocab_size, (batch, seq + 1), device=dev) for _ in range(2)]
    docs = None
    if doc_len:
        g = torch.Generator(device=dev).manual_seed(1)
        docs = [torch.cumsum(torch.rand(batch, seq, device=dev, generator=g) < 1 / doc_len,
                             dim=1) for _ in batches]

    def step(i: int) -> torch.Tensor:
        b = batches[i % 2]
        with torch.autocast(dev.type, dtype=torch.bfloat16):
            out = fwd(b[:, :-1], b[:, 1:], doc_ids=None if docs is None else docs[i % 2])
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return out.loss.detach()

    times, warm_s, loss = time_steps(step, warmup, steps, dev.type == "cuda")
    med = times[len(times) // 2]
    return {"case": label, "batch": batch, "seq": seq, "compile": compile_mode,
            "median_step_s": med, "min_step_s": times[0], "tokens_per_s": batch * seq / med,
            "warmup_s": warm_s, "final_loss": float(loss),
            "peak_mem_gib": torch.cuda.max_memory_allocated() / 2**30 if dev.type == "cuda"
            else 0.0}


def main(argv: list[str] | None = None) -> int:
    """Run the parts that fit in the time budget; write JSON and print tables with ratios."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="attention_decode_bench.json")
    ap.add_argument("--parts", default="decode,attention")
    ap.add_argument("--budget-s", type=float, default=420.0)
    ap.add_argument("--context", type=int, default=1024)
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--compile", default="blocks", choices=["blocks", "model", "none"])
    ap.add_argument("--only", default="", help="comma-separated case names")
    ap.add_argument("--smoke", action="store_true",
                    help="tiny shapes on whatever device there is (checks the script itself)")
    args = ap.parse_args(argv)
    t_start = time.perf_counter()
    gpu = torch.cuda.is_available()
    dev = torch.device("cuda" if gpu else "cpu")
    env = {"device": torch.cuda.get_device_name(0) if gpu else "cpu", "torch": torch.__version__,
           "cuda": torch.version.cuda, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    print(json.dumps(env), flush=True)
    out = Path(args.out)
    only = {s for s in args.only.split(",") if s}
    results: list[dict[str, Any]] = []
    parts = args.parts.split(",")
    if args.smoke:
        small = dict(vocab_size=512, d_model=64, n_layers=2, n_heads=4, d_ff=128)
        dec_cfg = ModelConfig(**small, max_seq_len=96)
        attn_cfg = ModelConfig(**small, max_seq_len=64)
        seq, batch, context, new = 64, 2, 32, 16
    else:
        attn_cfg = config_from_preset("350m", vocab_size=50304)
        seq, batch, context, new = 2048, args.batch, args.context, args.new_tokens
        dec_cfg = config_from_preset("125m", vocab_size=50304, max_seq_len=context + new + 64)

    if "decode" in parts:
        modes = ["cuda_graph", "compiled"] if gpu else ["static"]
        if args.smoke and gpu:
            modes = ["cuda_graph"]
        dtype = torch.bfloat16 if gpu else torch.float32
        results += decode_cases(dec_cfg, context, new, dev, dtype, modes)
        out.write_text(json.dumps({"env": env, "results": results}, indent=2))

    window = 1024 if not args.smoke else 16
    # (label, config overrides, mean document length, estimated seconds with compile)
    cases = [("causal", {}, None, 35), ("alibi", {"pos_encoding": "alibi"}, None, 45),
             ("docs", {}, 512 if not args.smoke else 16, 45),
             ("sliding", {"sliding_window": window}, None, 45),
             ("alibi-dense", {"pos_encoding": "alibi", "attn_impl": "sdpa"}, None, 40)]
    if "attention" in parts:
        for label, kw, doc_len, est in cases:
            if only and label not in only:
                continue
            left = args.budget_s - (time.perf_counter() - t_start)
            if left < est and not args.smoke:
                r: dict[str, Any] = {"case": label, "skipped": f"{left:.0f}s left < {est}s"}
            else:
                print(f"running {label} ...", flush=True)
                cfg = ModelConfig.from_dict({**attn_cfg.to_dict(), **kw})
                try:
                    r = train_case(label, cfg, batch, seq, 3 if args.smoke else args.steps,
                                   1 if args.smoke else 3, doc_len,
                                   "none" if args.smoke else args.compile, dev)
                except Exception as e:  # record and go on to the next case
                    r = {"case": label, "error": f"{type(e).__name__}: {str(e)[:600]}"}
                gc.collect()
                if gpu:
                    torch.cuda.empty_cache()
                    torch.cuda.reset_peak_memory_stats()
            results.append(r)
            print(json.dumps(r), flush=True)
            out.write_text(json.dumps({"env": env, "results": results}, indent=2))

    by = {r["case"]: r for r in results if "tokens_per_s" in r}
    ratios: dict[str, float] = {}
    for label, *_ in cases[1:]:
        if label in by and "causal" in by:
            ratios[f"{label} step time / causal"] = (by["causal"]["tokens_per_s"]
                                                     / by[label]["tokens_per_s"])
    for mode in ("cuda_graph", "compiled", "static"):
        if f"decode-{mode}" in by and "decode-eager" in by:
            ratios[f"{mode}/eager decode"] = (by[f"decode-{mode}"]["tokens_per_s"]
                                              / by["decode-eager"]["tokens_per_s"])
    out.write_text(json.dumps({"env": env, "results": results, "ratios": ratios}, indent=2))
    print(f"\n{env['device']} | torch {env['torch']} | {env['date']}")
    for r in results:
        if "tokens_per_s" not in r:
            print(f"{r['case']:<20} {r.get('error') or r.get('skipped')}")
        elif r["case"].startswith("decode"):
            print(f"{r['case']:<20} {r['tokens_per_s']:>10,.1f} tok/s end-to-end "
                  f"{r['step_tokens_per_s']:>10,.1f} tok/s step  setup {r['setup_s']:.1f}s  "
                  f"agree {r['agreement']:.3f}")
        else:
            print(f"{r['case']:<20} {r['tokens_per_s']:>10,.0f} tok/s  step "
                  f"{1e3 * r['median_step_s']:.1f} ms  warm-up {r['warmup_s']:.0f}s  "
                  f"loss {r['final_loss']:.3f}  mem {r['peak_mem_gib']:.1f} GiB")
    for k, v in ratios.items():
        print(f"{k}: {v:.3f}")
    print(f"total {time.perf_counter() - t_start:.0f}s")
    return 0 if all("error" not in r for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
