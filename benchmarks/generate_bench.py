"""Generation throughput with and without the KV cache (model/generate.py), one GPU.

    PYTHONUNBUFFERED=1 python benchmarks/generate_bench.py --out $OUT/generate_bench.json

For each batch size, a random-weight model (preset "125m" by default, bf16 on CUDA) continues
random prompts of ``--context`` tokens (1,024 by default) by ``--new-tokens`` tokens greedily,
once with the KV cache (prefill, then one token per step) and once without (the whole
sequence recomputed at every step). Reported: wall time and new tokens/s of each (prefill
included, after one warm-up run of each), the speed-up, and the fraction of generated tokens
on which the two agree (random weights in bf16 can break near-ties differently; in float32
they agree exactly, which tests/test_generate.py checks). Eager mode, no ``torch.compile``.

A CPU smoke run (tiny model, short context) only checks that the script works:

    python benchmarks/generate_bench.py --preset tiny --context 64 --new-tokens 8 --batch 1
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from model.generate import generate  # noqa: E402
from model.model import Transformer, config_from_preset  # noqa: E402


def _timed(fn: Any, device: torch.device) -> tuple[Any, float]:
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    out = fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return out, time.perf_counter() - start


def bench(model: Transformer, batch: int, context: int, new_tokens: int,
          device: torch.device, seed: int = 0) -> dict[str, Any]:
    """Time cached and uncached greedy generation for one batch size."""
    g = torch.Generator().manual_seed(seed)
    prompts = torch.randint(0, model.config.vocab_size, (batch, context), generator=g).tolist()
    result: dict[str, Any] = {"batch": batch, "context": context, "new_tokens": new_tokens}
    tokens = {}
    for use_cache in (True, False):
        def run(use_cache: bool = use_cache) -> list[list[int]]:
            return generate(model, prompts, new_tokens, temperature=0, use_cache=use_cache)

        run()  # warm-up (allocator, kernels)
        out, secs = _timed(run, device)
        name = "cached" if use_cache else "uncached"
        tokens[name] = out
        result[f"{name}_s"] = round(secs, 4)
        result[f"{name}_tok_per_s"] = round(batch * new_tokens / secs, 1)
    result["speedup"] = round(result["cached_tok_per_s"] / result["uncached_tok_per_s"], 2)
    same = sum(a == b for ra, rb in zip(tokens["cached"], tokens["uncached"], strict=True)
               for a, b in zip(ra, rb, strict=True))
    result["token_agreement"] = round(same / (batch * new_tokens), 4)
    return result


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and write the JSON results."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="125m")
    ap.add_argument("--context", type=int, default=1024)
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 8, 32])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", default=None, help="bf16 or fp32 (default: bf16 on CUDA)")
    ap.add_argument("--out", default=None, help="JSON file for the results")
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    dtype_name = args.dtype or ("bf16" if device.type == "cuda" else "fp32")
    dtype = {"bf16": torch.bfloat16, "fp32": torch.float32}[dtype_name]
    torch.manual_seed(0)
    cfg = config_from_preset(args.preset, max_seq_len=args.context + args.new_tokens)
    model = Transformer(cfg).to(device=device, dtype=dtype).eval()
    header = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
              "preset": args.preset, "dtype": dtype_name, "torch": torch.__version__,
              "params": model.num_params()}
    print(json.dumps(header))
    results = []
    for b in args.batch:
        r = bench(model, b, args.context, args.new_tokens, device)
        print(json.dumps(r), flush=True)
        results.append(r)
        if args.out:
            Path(args.out).write_text(json.dumps({**header, "results": results}, indent=1))
    print(f"{'batch':>5} {'cached tok/s':>13} {'uncached tok/s':>15} {'speed-up':>9} {'agree':>6}")
    for r in results:
        print(f"{r['batch']:>5} {r['cached_tok_per_s']:>13} {r['uncached_tok_per_s']:>15} "
              f"{r['speedup']:>9} {r['token_agreement']:>6}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
