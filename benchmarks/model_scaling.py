"""Data-parallel scaling of the trainer: DDP and FSDP2 on 1, 2 and 4 GPUs of one host.

    # one launch (torchrun inside): world size, mode, settings variants, which GPUs
    python benchmarks/model_scaling.py run --world 1 --mode none --out $OUT/w1.json
    python benchmarks/model_scaling.py run --world 4 --mode ddp --variants default,bucket100 \\
        --out $OUT/ddp4.json
    python benchmarks/model_scaling.py run --world 2 --mode fsdp --devices 2,3 --out $OUT/f2.json
    # the table: tokens/s, scaling efficiency against the 1-GPU run(s), breakdown, losses
    python benchmarks/model_scaling.py report $OUT/*.json --md $OUT/scaling.md

Each ``run`` starts ``torchrun --nproc_per_node N`` on this script's ``worker``, which times
full training steps of the trainer's own code: the 350M preset (``--preset``), bf16
autocast, ``torch.compile`` of the DDP/FSDP2-wrapped model (``model.parallel.parallelize``
with :class:`model.parallel.ParallelOptions`), micro-batches through
``model.train.accumulate_gradients`` (gradient sync on the last micro-batch only), the
all-reduced loss, gradient clipping (the factor applied inside the fused AdamW kernel),
fused AdamW with the device-side skip of a non-finite step, and the host read of each step's
loss and gradient norm one step late, after the next step is queued, as the trainer's loop
does it. What is held fixed: the **global batch** (``--global-batch`` windows of
``--seq`` tokens per optimizer step) and the per-GPU micro-batch (``--micro-batch``), so
gradient accumulation is ``global / (micro * world)``; every run sees the same windows in
the same order (a seeded Markov-chain pool, ``moe_train_run.markov_pool``, sliced per rank
and micro-step as the trainer slices its global batch) from the same initial weights, so the
per-step losses of every world size are the same computation up to bf16 rounding and
reduction order.

Per variant: ``--warmup`` steps (compile), ``--steps`` timed steps (CUDA events around the
forward/backward phase and the optimizer phase of each step, steps back to back; a step's
time runs from the previous step's end to its own, so idle time between steps counts;
median reported), then, with
more than one GPU, ``--steps`` more with gradient synchronisation switched off (DDP
``no_sync``; FSDP2 ``set_requires_gradient_sync(False)``, which also leaves the optimizer
nothing to update): forward/backward with sync minus without is the communication the
backward pass does not hide. ``--profile`` runs one more step under torch.profiler on rank 0
(kernel time, NCCL time, the largest kernels). Scaling efficiency = tokens/s at N GPUs /
(N x tokens/s of the 1-GPU run with the same global batch and micro-batch); given several
1-GPU runs (before and after, say: the baseline moves a few percent between hosts and
runs), ``report`` prints the range over them. Variants:
``VARIANTS`` below ("default" = today's ``ParallelOptions()``, "before" = the settings before
this benchmark tuned them).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import socket
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(HERE))

from moe_train_run import markov_pool  # noqa: E402

from model import parallel  # noqa: E402
from model.model import Transformer, config_from_preset  # noqa: E402
from model.train import (  # noqa: E402
    HostCopy,
    TrainConfig,
    accumulate_gradients,
    build_optimizer,
    finish_step,
    lr_at,
    peak_flops_of,
)

# Named settings (model.parallel.ParallelOptions fields); "a+b" combines variants.
# "default" is ParallelOptions() as it is now; "before" the defaults before this benchmark
# tuned them (the "default" rows of the 2026-11-27 figures in benchmarks/RESULTS.md).
VARIANTS: dict[str, dict[str, Any]] = {
    "default": {},
    "before": {"ddp_grad_as_bucket_view": False, "ddp_bucket_cap_mb": 25.0, "fsdp_reshard": "all",
               "fsdp_prefetch": 1},
    "bucket25": {"ddp_bucket_cap_mb": 25.0},
    "noview": {"ddp_grad_as_bucket_view": False},
    "reshard_all": {"fsdp_reshard": "all", "fsdp_prefetch": 1},
    "bucket50": {"ddp_bucket_cap_mb": 50.0},
    "bucket100": {"ddp_bucket_cap_mb": 100.0},
    "bucket200": {"ddp_bucket_cap_mb": 200.0},
    "view": {"ddp_grad_as_bucket_view": True},
    "static": {"ddp_static_graph": True},
    "reshard_last": {"fsdp_reshard": "all_but_last"},
    "prefetch1": {"fsdp_prefetch": 1},
    "noreshard": {"fsdp_reshard": "none"},
    "prefetch2": {"fsdp_prefetch": 2},
    "bf16reduce": {"fsdp_reduce_dtype": "bf16"},
    "ddpbf16": {"ddp_reduce_dtype": "bf16"},
}


def variant_options(name: str) -> dict[str, Any]:
    """The ParallelOptions fields of a variant name (``"a+b"`` merges ``a`` and ``b``)."""
    opts: dict[str, Any] = {}
    for part in name.split("+"):
        if part not in VARIANTS:
            raise SystemExit(f"unknown variant {part!r}; known: {sorted(VARIANTS)}")
        opts.update(VARIANTS[part])
    return opts


# --------------------------------------------------------------------------------------------
# worker (one process per GPU, under torchrun)
# --------------------------------------------------------------------------------------------


class PhaseTimer:
    """Marks inside a step: CUDA events on a GPU (read after the phase), wall clock on CPU."""

    def __init__(self, cuda: bool) -> None:
        self.cuda = cuda
        self.marks: list[list[Any]] = []

    def mark(self, row: list[Any]) -> None:
        """Append a time mark to ``row``."""
        if self.cuda:
            ev = torch.cuda.Event(enable_timing=True)
            ev.record()
            row.append(ev)
        else:
            row.append(time.perf_counter())

    def step_times(self) -> list[float]:
        """Seconds per step (a row), each from the previous row's last mark to its own (the
        first row from its first mark): the time between the ends of consecutive steps, so
        the device idling between two steps is counted."""
        ends = [r[-1] for r in self.marks]
        starts = [self.marks[0][0]] + ends[:-1] if self.marks else []
        if self.cuda:
            torch.cuda.synchronize()
            return [a.elapsed_time(b) / 1e3 for a, b in zip(starts, ends, strict=True)]
        return [b - a for a, b in zip(starts, ends, strict=True)]

    def durations(self) -> list[list[float]]:
        """Seconds between consecutive marks of each row."""
        if self.cuda:
            torch.cuda.synchronize()
            return [[a.elapsed_time(b) / 1e3 for a, b in zip(r, r[1:], strict=False)] for r in self.marks]
        return [[b - a for a, b in zip(r, r[1:], strict=False)] for r in self.marks]


def _median(xs: list[float]) -> float:
    xs = sorted(xs)
    return xs[len(xs) // 2] if xs else float("nan")


def run_variant(args: argparse.Namespace, info: parallel.DistInfo, pool: torch.Tensor,
                variant: str) -> dict[str, Any]:
    """Build, wrap, compile and time one settings variant; returns its record (rank 0's
    timings; losses are all-reduced)."""
    dev, world, rank = info.device, info.world_size, info.rank
    cuda = dev.type == "cuda"
    mode = args.mode if world > 1 else "none"
    opts = parallel.ParallelOptions(**variant_options(variant))
    G, B, T = args.global_batch, args.micro_batch, args.seq
    accum = G // (B * world)
    torch._dynamo.reset()
    torch.manual_seed(0)
    cfg = model_config(args)
    model = Transformer(cfg).to(dev)
    wrapped = parallel.parallelize(model, mode, info,
                                   param_dtype=torch.bfloat16 if cuda else None, options=opts)
    tcfg = TrainConfig(lr=args.lr, warmup_steps=5, schedule="constant")
    opt = build_optimizer(model, tcfg, dev)
    do_compile = cuda if args.compile == "auto" else args.compile == "true"
    fwd = torch.compile(wrapped) if do_compile else wrapped
    params = [p for p in model.parameters() if p.requires_grad]
    autocast = lambda: torch.autocast(dev.type, dtype=torch.bfloat16)  # noqa: E731
    if cuda:
        torch.cuda.reset_peak_memory_stats()

    pending: list[HostCopy] = []

    def step(s: int, sync: bool, timer: PhaseTimer | None) -> HostCopy:
        """One optimizer step as the trainer's loop runs it: the previous step's values are
        read on the host after this step's forward/backward is queued."""
        for g in opt.param_groups:
            g["lr"] = lr_at(s, tcfg)
        gb = pool[s * G:(s + 1) * G]
        rows = [gb[(m * world + rank) * B:(m * world + rank + 1) * B] for m in range(accum)]
        micro = ((r[:, :-1].contiguous(), r[:, 1:].contiguous(), None) for r in rows)
        row: list[Any] = []
        if timer:
            timer.mark(row)
        stats = accumulate_gradients(fwd, wrapped, mode, micro, accum, autocast, dev, sync=sync)
        if timer:
            timer.mark(row)
        parallel.all_reduce_mean(stats)
        if pending:
            pending.pop().get()
        pending.append(finish_step(opt, params, stats, 1.0)[0])
        if timer:
            timer.mark(row)
            timer.marks.append(row)
        return pending[-1]

    t0 = time.perf_counter()
    readbacks = [step(s, True, None) for s in range(args.warmup)]
    if cuda:
        torch.cuda.synchronize()
    warm_s = time.perf_counter() - t0
    timed = PhaseTimer(cuda)
    readbacks += [step(args.warmup + i, True, timed) for i in range(args.steps)]
    step_times = timed.step_times()
    sync_d = timed.durations()
    losses = [r.get()[0] for r in readbacks]
    rec: dict[str, Any] = {
        "world": world, "mode": mode, "variant": variant, "options": variant_options(variant),
        "global_batch": G, "micro_batch": B, "grad_accum": accum, "seq": T,
        "compiled": do_compile, "warmup_s": warm_s,
        "step_s": _median(step_times),
        "fwdbwd_s": _median([d[0] for d in sync_d]), "optim_s": _median([d[1] for d in sync_d]),
        "step_s_all": step_times, "losses": losses,
    }
    if world > 1 and args.nosync_steps:
        free = PhaseTimer(cuda)
        base = args.warmup + args.steps
        for i in range(args.nosync_steps):
            step(base + i, False, free)
        d = free.durations()
        rec["nosync_fwdbwd_s"] = _median([x[0] for x in d])
        rec["nosync_step_s"] = _median(free.step_times())
    if args.profile:
        rec["profile"] = profile_step(lambda: step(args.warmup + args.steps + args.nosync_steps,
                                                   True, None), info.is_main and cuda)
    rec["tokens_per_s"] = G * T / rec["step_s"]
    peak = peak_flops_of(dev)
    fpt = model.flops_per_token(T)
    rec["flops_per_token"] = fpt
    rec["mfu"] = fpt * rec["tokens_per_s"] / (peak * world) if peak else None
    rec["peak_mem_gib"] = torch.cuda.max_memory_allocated() / 2**30 if cuda else 0.0
    return rec


def profile_step(step: Any, active: bool, top: int = 12) -> dict[str, Any] | None:
    """Run ``step()`` under torch.profiler (when ``active``; plain otherwise) and sum device
    time: all kernels, NCCL kernels, and the ``top`` kernels by self device time (ms, with
    their launch counts); user annotations (``Optimizer.step#...``, ``DDP.forward``) are not
    kernels and are left out. ``idle_ms``: the time within the step's kernel span when no
    kernel ran, with the largest gaps and the kernels on either side."""
    if not active:
        step()
        return None
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        step()
        torch.cuda.synchronize()

    def on_device(e: Any) -> bool:
        return "cuda" in str(e.device_type).lower() and not getattr(e, "is_user_annotation", False)

    # kernel (and memcpy/memset) rows only: CPU-op rows repeat their kernels' time
    events = [e for e in prof.key_averages() if on_device(e)]

    def dev_ms(e: Any) -> float:
        return getattr(e, "self_device_time_total", getattr(e, "self_cuda_time_total", 0)) / 1e3

    events.sort(key=dev_ms, reverse=True)
    nccl = sum(dev_ms(e) for e in events if "nccl" in e.key.lower())
    total = sum(dev_ms(e) for e in events)
    out: dict[str, Any] = {
        "device_ms": total, "nccl_ms": nccl, "compute_ms": total - nccl,
        "top": [[e.key[:90], round(dev_ms(e), 2), e.count] for e in events[:top]]}
    try:
        spans = sorted((e.time_range.start, e.time_range.end, e.name) for e in prof.events()
                       if on_device(e))
    except Exception as exc:  # a profiler build without per-event device times
        out["idle_error"] = f"{type(exc).__name__}: {exc}"
        spans = []
    if spans:
        gaps, busy_end, prev = [], spans[0][0], spans[0][2]
        for start, end, name in spans:
            if start > busy_end:
                gaps.append((start - busy_end, prev[:60], name[:60]))
            if end > busy_end:
                busy_end, prev = end, name
        gaps.sort(reverse=True)
        out["span_ms"] = (busy_end - spans[0][0]) / 1e3
        out["idle_ms"] = sum(g[0] for g in gaps) / 1e3
        out["largest_gaps"] = [[round(g / 1e3, 3), a, b] for g, a, b in gaps[:8]]
    return out


def model_config(args: argparse.Namespace) -> Any:
    """The preset's ModelConfig (vocabulary 50,304) or, with ``--smoke``, a tiny one."""
    if args.smoke:
        return config_from_preset("tiny", vocab_size=512, max_seq_len=args.seq)
    return config_from_preset(args.preset, vocab_size=50304, max_seq_len=max(2048, args.seq))


def worker(args: argparse.Namespace) -> int:
    """One rank: every variant in turn; rank 0 writes the records to ``--out``."""
    info = parallel.init_distributed("auto")
    try:
        world = info.world_size
        if args.global_batch % (args.micro_batch * world):
            raise SystemExit(f"--global-batch {args.global_batch} is not a multiple of "
                             f"--micro-batch {args.micro_batch} x world {world}")
        n_steps = args.warmup + args.steps + args.nosync_steps + int(args.profile)
        vocab = model_config(args).vocab_size
        # the same pool on every rank: a seeded generator on the rank's device
        pool = markov_pool(n_steps * args.global_batch, args.seq + 1, min(4096, vocab - 1), 4,
                           0, info.device)
        device_name = (torch.cuda.get_device_name(info.device) if info.device.type == "cuda"
                       else "cpu")
        records = []
        for variant in args.variants.split(","):
            try:
                rec = run_variant(args, info, pool, variant)
                gc.collect()
                if info.device.type == "cuda":
                    torch.cuda.empty_cache()
            except Exception as e:  # record and go on (a variant the torch version refuses)
                rec = {"world": world, "mode": args.mode, "variant": variant,
                       "error": f"{type(e).__name__}: {str(e)[:400]}",
                       "traceback": traceback.format_exc()[-2000:]}
            rec.update(device=device_name, torch=torch.__version__, preset=args.preset,
                       nccl_env={k: v for k, v in os.environ.items() if k.startswith("NCCL_")})
            records.append(rec)
            if info.is_main:
                brief = {k: v for k, v in rec.items() if k not in ("losses", "step_s_all")}
                print(json.dumps(brief), flush=True)
                Path(args.out).write_text(json.dumps(records, indent=1))
            parallel.barrier()
    finally:
        parallel.destroy()
    return 0


# --------------------------------------------------------------------------------------------
# launcher and report
# --------------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


WORKER_OPTIONS = ("mode", "variants", "preset", "seq", "global_batch", "micro_batch", "warmup",
                  "steps", "nosync_steps", "lr", "compile", "out")


def worker_args(args: argparse.Namespace) -> list[str]:
    """The ``run`` options the worker takes, as command-line arguments (mode ``none`` on one
    GPU)."""
    out = []
    for name in WORKER_OPTIONS:
        value = "none" if name == "mode" and args.world == 1 else getattr(args, name)
        out += [f"--{name.replace('_', '-')}", str(value)]
    return out + [flag for flag in ("--smoke", "--profile")
                  if getattr(args, flag[2:])]


def launch(args: argparse.Namespace, extra: list[str]) -> int:
    """Start ``torchrun --nproc_per_node world`` on the worker with the same options."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if args.devices:
        env["CUDA_VISIBLE_DEVICES"] = args.devices
    if not torch.cuda.is_available():
        env.setdefault("OMP_NUM_THREADS", "1")
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={args.world}",
           "--master_addr=127.0.0.1", f"--master_port={_free_port()}", str(Path(__file__)),
           "worker", *extra]
    try:
        return subprocess.run(cmd, env=env, timeout=args.timeout).returncode
    except subprocess.TimeoutExpired:
        print(f"world {args.world} {args.mode}: timed out after {args.timeout}s", flush=True)
        return 124


def _records(paths: list[str]) -> list[dict[str, Any]]:
    out = []
    for p in paths:
        try:
            out += json.loads(Path(p).read_text())
        except (OSError, ValueError) as e:
            print(f"skipping {p}: {e}", file=sys.stderr)
    return out


def _span(values: list[float], fmt: str, unit: str = "") -> str:
    """``values`` as one figure, or ``lo-hi`` when they differ in the printed precision."""
    if not values:
        return ""
    lo, hi = format(min(values), fmt), format(max(values), fmt)
    return f"{lo}{unit}" if lo == hi else f"{lo}-{hi}{unit}"


def report(paths: list[str], md: str = "") -> str:
    """The scaling table of the records in ``paths`` (JSON lists written by ``run``).

    Efficiency divides by the 1-GPU "default" run of the same global and micro-batch; with
    several such runs (before and after, or on the same host alone and beside other jobs)
    it is printed as the range over them, and the loss difference as the largest; a 1-GPU
    row then shows the spread of the baselines themselves."""
    recs = [r for r in _records(paths) if "step_s" in r]
    bad = [r for r in _records(paths) if "error" in r]
    lines = ["| GPUs | mode | variant | micro x accum | step ms | fwd+bwd ms | optim ms | "
             "fwd+bwd no sync ms | exposed comm ms | tokens/s | efficiency | MFU | "
             "max abs d loss vs 1 GPU | final loss | peak GiB |",
             "|---:|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in sorted(recs, key=lambda r: (r["global_batch"], r["world"], r["mode"],
                                         r["micro_batch"], r["variant"])):
        ones = [o for o in recs if o["world"] == 1 and o["global_batch"] == r["global_batch"]
                and o["micro_batch"] == r["micro_batch"] and o["variant"] == "default"]
        effs = [100 * r["tokens_per_s"] / (r["world"] * o["tokens_per_s"]) for o in ones]
        dlosses = [max(abs(a - b) for a, b in zip(r["losses"], o["losses"], strict=False))
                   for o in ones]
        nos = r.get("nosync_fwdbwd_s")
        exposed = (r["fwdbwd_s"] - nos) * 1e3 if nos is not None else None

        def f(v: Any, fmt: str) -> str:
            return "" if v is None else format(v, fmt)

        lines.append(
            f"| {r['world']} | {r['mode']} | {r['variant']} | {r['micro_batch']} x "
            f"{r['grad_accum']} | {1e3 * r['step_s']:.1f} | {1e3 * r['fwdbwd_s']:.1f} | "
            f"{1e3 * r['optim_s']:.1f} | {f(nos and 1e3 * nos, '.1f')} | {f(exposed, '.1f')} | "
            f"{r['tokens_per_s']:,.0f} | {_span(effs, '.1f', '%')} | "
            f"{f(r['mfu'] and 100 * r['mfu'], '.1f')}{'%' if r['mfu'] else ''} | "
            f"{f(max(dlosses, default=None), '.4f')} | {r['losses'][-1]:.4f} | "
            f"{r['peak_mem_gib']:.1f} |")
    for r in recs:
        pr = r.get("profile")
        if pr:
            lines.append(f"\nprofile, {r['world']} GPUs {r['mode']} {r['variant']} (rank 0, one "
                         f"step of {1e3 * r['step_s']:.1f} ms): kernels {pr['device_ms']:.1f} ms "
                         f"= compute {pr['compute_ms']:.1f} + NCCL {pr['nccl_ms']:.1f}; top: "
                         + "; ".join(f"{t[0]} {t[1]}" for t in pr["top"][:8]))
    for r in bad:
        lines.append(f"\n{r['world']} GPUs {r['mode']} {r['variant']}: {r['error']}")
    text = "\n".join(lines)
    if recs:
        r0 = recs[0]
        text = (f"{r0.get('device')} | torch {r0.get('torch')} | preset {r0.get('preset')} | "
                f"seq {r0['seq']}\n\n" + text)
    if md:
        Path(md).write_text(text + "\n")
    return text


def main(argv: list[str] | None = None) -> int:
    """CLI: ``run`` (launch torchrun), ``worker`` (under torchrun), ``report``."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name in ("run", "worker"):
        p = sub.add_parser(name)
        p.add_argument("--mode", default="ddp", choices=["none", "ddp", "fsdp"])
        p.add_argument("--variants", default="default", help=f"comma list of {sorted(VARIANTS)}"
                       " or a+b combinations")
        p.add_argument("--preset", default="350m")
        p.add_argument("--seq", type=int, default=2048)
        p.add_argument("--global-batch", type=int, default=64, help="windows per step")
        p.add_argument("--micro-batch", type=int, default=16, help="windows per GPU pass")
        p.add_argument("--warmup", type=int, default=3)
        p.add_argument("--steps", type=int, default=8)
        p.add_argument("--nosync-steps", type=int, default=4)
        p.add_argument("--lr", type=float, default=6e-4)
        p.add_argument("--compile", default="auto", choices=["auto", "true", "false"])
        p.add_argument("--smoke", action="store_true", help="tiny model (CPU check)")
        p.add_argument("--profile", action="store_true",
                       help="profile one more step on rank 0 (device time, NCCL time)")
        p.add_argument("--out", required=True)
        if name == "run":
            p.add_argument("--world", type=int, default=1)
            p.add_argument("--devices", default="", help="CUDA_VISIBLE_DEVICES for this run")
            p.add_argument("--timeout", type=float, default=500.0)
    p = sub.add_parser("report")
    p.add_argument("files", nargs="+")
    p.add_argument("--md", default="")
    args = ap.parse_args(argv)
    if args.cmd == "worker":
        return worker(args)
    if args.cmd == "report":
        print(report(args.files, args.md))
        return 0
    return launch(args, worker_args(args))


if __name__ == "__main__":
    sys.exit(main())
