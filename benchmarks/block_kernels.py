"""One transformer block's compiled step and its kernels, per variant: where the elementwise
time of the 350M model goes, and what a rewrite or precision option saves.

    python benchmarks/block_kernels.py --variants base,rope-autograd,bf16res,rope-flip,ndtile

Each variant compiles one ``model.model.Block`` of the preset (default 350M, batch 16 x 2048)
forward and backward under bf16 autocast, times ``--steps`` steps, then profiles five
(``model_scaling.profile_step``) and prints the largest kernels and the Triton (fused
elementwise and norm) total per step. Every variant
runs in its own process (a patched function or inductor setting cannot leak into the next)
and is compared with "base" (the model as it is) by the ratio of step times.

Variants: ``base``; ``bf16res`` (the residual stream in bf16, ``fp32_residual: false``:
the block's input and output are bf16); ``rope-autograd`` (queries and keys split from the
projection and rotated by ``apply_rope``, the gradient left to autograd and inductor: the
attention before ``model.rope.rope_qkv``); on top of that path, ``rope-flip`` (rotation as
``x * C + flip(x) * S`` with full-width tables), ``rope-fn`` (an autograd function whose
backward is the inverse rotation), ``rope-bf16`` (rotation in the input dtype, as
transformers' Llama does); ``ndtile`` (inductor's ``triton.prefer_nd_tiling``). Needs CUDA
except with ``--smoke`` (tiny, CPU).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from model_scaling import profile_step  # noqa: E402

import model.model as mm  # noqa: E402

PROFILED_STEPS = 5

VARIANTS = ("base", "bf16res", "rope-autograd", "rope-flip", "rope-fn", "rope-bf16", "ndtile")


def _rope_flip(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    d2 = x.shape[-1] // 2
    c = torch.cat([cos, cos], -1)[None, :, None, :]
    s = torch.cat([-sin, sin], -1)[None, :, None, :]
    xf = x.float()
    return (xf * c + xf.unflatten(-1, (2, d2)).flip(-2).flatten(-2) * s).type_as(x)


class _RopeFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, cos, sin):  # type: ignore[override]
        ctx.save_for_backward(cos, sin)
        return _ROPE(x, cos, sin)

    @staticmethod
    def backward(ctx, g):  # type: ignore[override]
        cos, sin = ctx.saved_tensors
        return _ROPE(g, cos, -sin), None, None


def _rope_bf16(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    d2 = x.shape[-1] // 2
    x1, x2 = x[..., :d2], x[..., d2:]
    c, s = cos[None, :, None, :].to(x.dtype), sin[None, :, None, :].to(x.dtype)
    return torch.cat([x1 * c - x2 * s, x2 * c + x1 * s], dim=-1)


_ROPE = mm.apply_rope


def _rope_qkv_autograd(qkv: torch.Tensor, H: int, KV: int, D: int, cos: torch.Tensor,
                       sin: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    q, k, v = mm.split_qkv(qkv, H, KV, D)
    return mm.apply_rope(q, cos, sin), mm.apply_rope(k, cos, sin), v


def apply_variant(name: str) -> None:
    """Patch this process for variant ``name`` (see the module docstring)."""
    if name.startswith("rope-"):
        mm.rope_qkv = _rope_qkv_autograd  # what the attention calls
    if name == "rope-flip":
        mm.apply_rope = _rope_flip
    elif name == "rope-fn":
        mm.apply_rope = _RopeFn.apply
    elif name == "rope-bf16":
        mm.apply_rope = _rope_bf16
    elif name == "ndtile":
        import torch._inductor.config as inductor_config

        inductor_config.triton.prefer_nd_tiling = True
    elif name not in ("base", "bf16res", "rope-autograd"):
        raise SystemExit(f"unknown variant {name!r}; known: {VARIANTS}")


def measure(name: str, preset: str, batch: int, seq: int, steps: int, smoke: bool) -> dict:
    """Time and profile one block of ``preset`` under variant ``name``; returns a record."""
    apply_variant(name)
    dev = torch.device("cpu" if smoke else "cuda")
    cfg = (mm.ModelConfig(vocab_size=512, d_model=64, n_layers=2, n_heads=4, d_ff=128,
                          max_seq_len=seq) if smoke
           else mm.config_from_preset(preset, max_seq_len=max(seq, 2048)))
    torch.manual_seed(0)
    block = mm.Block(cfg, 0).to(dev)
    cos, sin = (t.to(dev) for t in mm.rope_tables(cfg.head_dim, seq, cfg.rope_theta))
    dtype = torch.bfloat16 if name == "bf16res" else torch.float32
    x0 = torch.randn(batch, seq, cfg.d_model, device=dev, dtype=dtype)
    grad = torch.randn_like(x0)
    fwd = torch.compile(lambda x: block(x, cos, sin)[0])

    def step() -> None:
        x = x0.detach().requires_grad_()
        with torch.autocast(dev.type, dtype=torch.bfloat16):
            y = fwd(x)
        y.backward(grad)

    def sync() -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize()

    for _ in range(3):
        step()
    sync()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    sync()
    step_ms = (time.perf_counter() - t0) / steps * 1e3
    # every kernel of PROFILED_STEPS steps (no profile on the CPU smoke run)
    prof = profile_step(lambda: [step() for _ in range(PROFILED_STEPS)], dev.type == "cuda",
                        top=100_000)
    kernels = [(k, ms / PROFILED_STEPS) for k, ms, _ in prof["top"]] if prof else []
    triton = sum(ms for k, ms in kernels if k.startswith("triton")) if prof else None
    return {"variant": name, "preset": preset, "batch": batch, "seq": seq,
            "step_ms": step_ms, "triton_ms": triton, "top": kernels[:16],
            "device": torch.cuda.get_device_name(0) if dev.type == "cuda" else "cpu"}


def main() -> int:
    """Run each variant in a subprocess (``--one``) and print the comparison table."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--preset", default="350m")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seq", type=int, default=2048)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--timeout", type=float, default=120.0, help="seconds per variant")
    ap.add_argument("--smoke", action="store_true", help="tiny block on CPU (checks the script)")
    ap.add_argument("--out", default="", help="write the records as JSON here")
    ap.add_argument("--one", default="", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(measure(args.one, args.preset, args.batch, args.seq, args.steps,
                                 args.smoke)), flush=True)
        return 0
    names = [v for v in args.variants.split(",") if v]
    unknown = sorted(set(names) - set(VARIANTS))
    if unknown:
        raise SystemExit(f"unknown variants {unknown}; known: {VARIANTS}")
    records = []
    for name in names:
        cmd = [sys.executable, __file__, "--one", name, "--preset", args.preset,
               "--batch", str(args.batch), "--seq", str(args.seq), "--steps", str(args.steps)]
        try:
            run = subprocess.run(cmd + (["--smoke"] if args.smoke else []), capture_output=True,
                                 text=True, timeout=args.timeout)
            lines = [ln for ln in run.stdout.splitlines() if ln.startswith("{")]
            rec = json.loads(lines[-1]) if lines else {"variant": name,
                                                       "error": run.stderr[-2000:]}
        except subprocess.TimeoutExpired:
            rec = {"variant": name, "error": f"did not finish within {args.timeout:.0f} s"}
        records.append(rec)
        print(json.dumps(rec), flush=True)
    base = next((r for r in records if r["variant"] == "base" and "step_ms" in r), None)
    print("\n| variant | step ms | Triton kernels ms | step / base |\n|---|---:|---:|---:|")
    for r in records:
        if "step_ms" not in r:
            print(f"| {r['variant']} | {r['error'].splitlines()[-1][:80]} | | |")
            continue
        ratio = f"{r['step_ms'] / base['step_ms']:.3f}" if base else ""
        triton = "" if r["triton_ms"] is None else f"{r['triton_ms']:.3f}"
        print(f"| {r['variant']} | {r['step_ms']:.3f} | {triton} | {ratio} |")
    if args.out:
        Path(args.out).write_text(json.dumps(records, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
