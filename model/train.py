"""Training loop: ``python -m model.train CONFIG.yaml`` or ``pipeline run jobs/train.yaml``.

Reads the packed Arrow token stream (:mod:`model.data`), trains :class:`model.model.Transformer`
with bf16 autocast, ``torch.compile``, fused AdamW (weight decay on matrices only), warmup plus
cosine or WSD learning-rate schedule, gradient clipping and accumulation; evaluates every
``eval_every`` steps on a fixed seeded subset of each validation stream's windows and on
every window of it at the last step (per-document losses saved as ``eval/<name>.npy``);
training windows come in seeded epochs (``data.sampler``); writes checkpoints that resume exactly,
metrics as JSONL and an SVG loss plot; prints tokens/s and MFU while it trains. Multi-GPU via
``torchrun`` (DDP or FSDP2, see :mod:`model.parallel`). A NaN or inf loss (or gradient norm)
stops the run: the optimizer step is skipped, the last good state is checkpointed and
:class:`TrainingDiverged` names the step.

Config (YAML subset or JSON; see ``jobs/train.yaml``)::

    job: train
    model: {preset: 125m, vocab_size: auto, ...ModelConfig fields}
    data: {train: DIR, eval: {name: DIR, ...}, seq_len: 1024, doc_masking: false,
           sampler: epochs}
    train: {...TrainConfig fields}

Paths are relative to the working directory.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shutil
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from model import parallel
from model.attention import SDPA_BACKENDS, sdpa_backend
from model.config import ConfigError, load_config_file, merge_overrides, parse_set_options
from model.data import EvalPlan, eval_plan, eval_subset, make_sampler, read_windows
from model.generate import resolve_checkpoint
from model.model import PRESETS, ModelConfig, Transformer
from tokenizer.token_stream import TokenStream

# Dense bf16 tensor-core peaks (datasheets, without sparsity), matched against the CUDA
# device name; H200 has H100's compute. Other cards: MFU omitted unless train.peak_flops set.
PEAK_BF16_FLOPS_BY_NAME = (("H200", 989e12), ("H100", 989e12), ("A100", 312e12),
                           ("L40S", 362e12))


def peak_flops_of(device: torch.device) -> float | None:
    """Dense bf16 peak FLOP/s of ``device`` from its name, or None when it is not known."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in PEAK_BF16_FLOPS_BY_NAME if key in name), None)


@dataclass
class DataConfig:
    """``data:`` section: stream directories and window length."""

    train: str = ""
    eval: dict[str, str] = field(default_factory=dict)
    seq_len: int = 1024
    doc_masking: bool = False
    # epochs: seeded shuffles of non-overlapping windows, a new order each epoch;
    # random_windows: uniform window starts drawn with replacement (the earlier sampler)
    sampler: str = "epochs"
    tokenizer: str = ""  # tokenizer directory; recorded in config.json for `pipeline sample`


@dataclass
class TrainConfig:
    """``train:`` section. ``batch_size`` is per rank and micro-step; the global batch is
    ``batch_size * grad_accum * world_size`` windows of ``seq_len`` tokens."""

    out_dir: str = "out/train/run"
    device: str = "auto"
    seed: int = 1337
    batch_size: int = 8
    grad_accum: int = 1
    max_steps: int = 1000
    lr: float = 3e-4
    min_lr_ratio: float = 0.1
    warmup_steps: int = 100
    schedule: str = "cosine"  # cosine | wsd | constant
    decay_frac: float = 0.2  # WSD: fraction of max_steps spent decaying
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-8
    fused_adamw: bool = True
    grad_clip: float = 1.0
    dtype: str = "bf16"  # autocast dtype: bf16 | fp32
    # Under bf16 autocast, the float32 matmuls left (the MoE router's logits) run on TF32
    # tensor cores, as nanoGPT runs them; false keeps them in full float32. A dtype: fp32 run
    # always multiplies in full float32.
    tf32: bool = True
    # fused causal attention kernel tried first: auto (PyTorch's order) | cudnn | flash
    sdpa_backend: str = "auto"
    compile: Any = "auto"  # true | false | auto (on for CUDA)
    parallel: str = "ddp"  # ddp | fsdp | none (only used under torchrun)
    # communication settings (model.parallel.ParallelOptions; benchmarks/model_scaling.py)
    ddp_bucket_cap_mb: float = 200.0
    ddp_static_graph: bool = False
    ddp_grad_as_bucket_view: bool = True
    ddp_reduce_dtype: str = "fp32"  # fp32 | bf16 gradient all-reduce
    fsdp_reshard: str = "all_but_last"  # all | all_but_last | none: blocks freeing params
    fsdp_prefetch: int = 2  # blocks all-gathered ahead (1 = FSDP2's implicit prefetch)
    fsdp_reduce_dtype: str = "fp32"  # fp32 | bf16 gradient reduce-scatter
    eval_every: int = 200
    # Intermediate evaluations score a fixed subset of each eval stream's windows, drawn
    # by eval_seed: eval_windows of them (default eval_batches * batch_size). The last step
    # scores every window (eval_full_final) and saves per-document losses.
    eval_batches: int = 10
    eval_windows: int | None = None
    eval_seed: int = 0
    eval_full_final: bool = True
    log_every: int = 10
    ckpt_every: int = 500
    keep_checkpoints: int = 2
    resume: bool = True
    halt_at_step: int | None = None  # stop (with a checkpoint) after this step
    peak_flops: float | None = None  # per device; default: by device name (peak_flops_of)
    # A checkpoint (state.pt or run dir) whose model weights start this run when there is no
    # checkpoint to resume from, e.g. `python -m model.upcycle`'s output; its model config
    # must equal this run's.
    init_from: str = ""
    plot: bool = True


@contextlib.contextmanager
def float32_matmuls(tf32: bool) -> Iterator[None]:
    """Run the block with float32 CUDA matmuls on TF32 tensor cores (``tf32``: inputs rounded
    to a 10-bit mantissa, float32 accumulation) or in full float32; the previous setting is
    restored on exit. Active while the model compiles and runs."""
    matmul = torch.backends.cuda.matmul
    if hasattr(matmul, "fp32_precision"):
        # torch >= 2.9: the setting inductor and cuBLAS read. Reading the legacy allow_tf32
        # raises once a caller has used this API, so it is not touched.
        name, value = "fp32_precision", "tf32" if tf32 else "ieee"
    else:
        name, value = "allow_tf32", tf32
    before = getattr(matmul, name)
    setattr(matmul, name, value)
    try:
        yield
    finally:
        setattr(matmul, name, before)


class TrainingDiverged(RuntimeError):
    """The loss or gradient norm became NaN/inf; the last good state was checkpointed."""

    def __init__(self, step: int, loss: float, grad_norm: float, checkpoint: Path | None) -> None:
        super().__init__(f"non-finite loss {loss} / grad norm {grad_norm} at step {step}; "
                         f"last good state checkpointed at {checkpoint}")
        self.step = step
        self.loss = loss
        self.grad_norm = grad_norm
        self.checkpoint = checkpoint


def _from_dict(cls: type, d: dict[str, Any] | None, section: str) -> Any:
    d = dict(d or {})
    known = {f.name for f in fields(cls)}
    unknown = set(d) - known
    if unknown:
        raise ValueError(f"unknown keys in '{section}': {sorted(unknown)}")
    return cls(**d)


# --------------------------------------------------------------------------------------------
# Pieces
# --------------------------------------------------------------------------------------------


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Learning rate for update ``step`` (0-based): linear warmup, then cosine / WSD / constant
    down to ``lr * min_lr_ratio`` at ``max_steps``."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    min_lr = cfg.lr * cfg.min_lr_ratio
    if cfg.schedule == "constant":
        return cfg.lr
    if cfg.schedule == "cosine":
        progress = (step - cfg.warmup_steps) / max(1, cfg.max_steps - cfg.warmup_steps)
        return min_lr + 0.5 * (cfg.lr - min_lr) * (1 + math.cos(math.pi * min(1.0, progress)))
    if cfg.schedule == "wsd":
        decay_steps = max(1, int(round(cfg.decay_frac * cfg.max_steps)))
        decay_start = max(cfg.warmup_steps, cfg.max_steps - decay_steps)
        if step < decay_start:
            return cfg.lr
        progress = (step + 1 - decay_start) / max(1, cfg.max_steps - decay_start)
        return cfg.lr - (cfg.lr - min_lr) * min(1.0, progress)
    raise ValueError(f"unknown schedule {cfg.schedule!r} (cosine, wsd, constant)")


def build_optimizer(model: nn.Module, cfg: TrainConfig, device: torch.device) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices (ndim >= 2) only; fused kernel where supported."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.ndim >= 2 else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    fused = cfg.fused_adamw and device.type in ("cuda", "cpu")
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=cfg.eps,
                             fused=fused)


def _fused_scale_ok(optimizer: torch.optim.Optimizer, params: list[nn.Parameter]) -> bool:
    """Whether ``optimizer`` is a fused Adam/AdamW over plain tensors (FSDP2's DTensor
    parameters excluded), whose kernel divides the gradients by a device ``grad_scale``."""
    return (isinstance(optimizer, torch.optim.Adam | torch.optim.AdamW)
            and bool(optimizer.defaults.get("fused"))
            and not any(type(p) is not nn.Parameter and type(p) is not torch.Tensor
                        for p in params))


def clip_gradients(optimizer: torch.optim.Optimizer, params: list[nn.Parameter],
                   max_norm: float) -> torch.Tensor:
    """Total L2 norm of the gradients of ``params`` (a device scalar, a DTensor under FSDP2);
    clips them to ``max_norm`` as ``clip_grad_norm_`` does (factor ``max_norm / (norm +
    1e-6)`` when below 1). Call :func:`optimizer_step` next.

    For a fused Adam/AdamW the clip is not a pass of its own over the gradients: the factor
    goes to the optimizer as the ``grad_scale`` divisor its fused kernel already applies
    (the mechanism ``torch.amp.GradScaler`` uses), saving a read and a write of every
    gradient per step. Otherwise the gradients are scaled in place."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:  # (e.g. FSDP2 with gradient sync off) a zero norm on the parameters' device
        return torch.zeros((), device=params[0].device if params else None)
    norm = torch.nn.utils.get_total_norm(grads, 2.0)
    if _fused_scale_ok(optimizer, params):
        # fp32 whatever the parameters' dtype, as GradScaler keeps its scale
        optimizer.grad_scale = torch.clamp((norm + 1e-6) / max_norm, min=1.0).float()  # type: ignore[attr-defined]
    else:
        torch.nn.utils.clip_grads_with_norm_(params, max_norm, norm)
    return norm


def optimizer_step(optimizer: torch.optim.Optimizer, params: list[nn.Parameter],
                   skip: torch.Tensor | None = None) -> None:
    """``optimizer.step()`` with the clip factor :func:`clip_gradients` left for it, then
    ``zero_grad``. ``skip`` (a device bool scalar, e.g. "the loss or the gradient norm is not
    finite") leaves parameters and optimizer state untouched where it is true: on the
    device for a fused Adam/AdamW (its kernel's ``found_inf``, as ``GradScaler`` uses it, so
    the host never waits), by reading the flag on the host otherwise."""
    if skip is not None and _fused_scale_ok(optimizer, params):
        optimizer.found_inf = skip.float()  # type: ignore[attr-defined]
        optimizer.step()
    elif skip is None or not bool(skip):
        optimizer.step()
    for name in ("grad_scale", "found_inf"):
        optimizer.__dict__.pop(name, None)
    optimizer.zero_grad(set_to_none=True)


def finish_step(optimizer: torch.optim.Optimizer, params: list[nn.Parameter],
                stats: torch.Tensor, max_norm: float) -> tuple[HostCopy, torch.Tensor]:
    """The optimizer half of a training step, with no host wait: clip (:func:`clip_gradients`),
    step unless ``stats`` (this step's all-reduced loss values, 1-D) or the gradient norm is
    not finite (:func:`optimizer_step`), and start copying ``[*stats, grad_norm]`` to the
    host. Returns that copy and the device flag "skipped"."""
    grad_norm = clip_gradients(optimizer, params, max_norm)
    if hasattr(grad_norm, "full_tensor"):  # FSDP2: the norm as a DTensor
        grad_norm = grad_norm.full_tensor()
    values = torch.cat([stats, grad_norm.reshape(1).to(stats.dtype)])
    bad = ~torch.isfinite(values).all()
    optimizer_step(optimizer, params, skip=bad)
    return HostCopy(values), bad


class HostCopy:
    """The values of a small device tensor, copied to host memory without making the host
    wait: :meth:`get` waits for that copy only, not for work queued after it (a CUDA event
    on pinned memory; a plain copy on the CPU). The trainer reads a step's loss this way one
    step late, so that the GPU never idles while the host reads it."""

    def __init__(self, values: torch.Tensor) -> None:
        values = values.detach()
        self._event = None
        if values.device.type == "cuda":
            self._host = torch.empty(values.shape, dtype=values.dtype, pin_memory=True)
            self._host.copy_(values, non_blocking=True)
            self._event = torch.cuda.Event()
            self._event.record(torch.cuda.current_stream(values.device))
        else:
            self._host = values.clone()

    def get(self) -> list[float]:
        """The values as a (nested) list, once the copy has landed."""
        if self._event is not None:
            self._event.synchronize()
        return self._host.tolist()


def parallel_options(cfg: TrainConfig) -> parallel.ParallelOptions:
    """The ``train.ddp_*`` / ``train.fsdp_*`` fields as :class:`model.parallel.ParallelOptions`
    (raises ValueError naming a bad field)."""
    return parallel.ParallelOptions(
        ddp_bucket_cap_mb=float(cfg.ddp_bucket_cap_mb), ddp_static_graph=cfg.ddp_static_graph,
        ddp_grad_as_bucket_view=cfg.ddp_grad_as_bucket_view,
        ddp_reduce_dtype=cfg.ddp_reduce_dtype, fsdp_reshard=cfg.fsdp_reshard,
        fsdp_prefetch=int(cfg.fsdp_prefetch), fsdp_reduce_dtype=cfg.fsdp_reduce_dtype)


def accumulate_gradients(fwd: Any, wrapped: nn.Module, mode: str, micro_batches: Any,
                         accum: int, autocast: Any, device: torch.device,
                         sync: bool = True) -> torch.Tensor:
    """Forward and backward over ``accum`` micro-batches (an iterable of ``(x, y, mask)``),
    each loss scaled by ``1 / accum``, gradients synchronised across ranks on the last one
    only (never with ``sync=False``: the communication-free reference of
    ``benchmarks/model_scaling.py``). ``fwd`` is the (compiled) callable, ``wrapped`` the
    DDP/FSDP module behind it. Returns this rank's mean ``[loss, ce, aux, z]`` over the
    micro-batches (not all-reduced).
    """
    stats = torch.zeros(4, device=device)
    for m, (x, y, mask) in enumerate(micro_batches):
        sync_now = sync and m == accum - 1
        sync_ctx = parallel.set_grad_sync(wrapped, mode, sync_now)
        with sync_ctx():
            with autocast():
                out = fwd(x, y, attn_mask=mask)
            (out.loss / accum).backward()
        stats += torch.stack([out.loss, out.ce_loss, out.aux_loss, out.z_loss]).detach() / accum
    return stats


def build_model_config(model_section: dict[str, Any], seq_len: int,
                       stream: TokenStream | None) -> ModelConfig:
    """ModelConfig from the ``model:`` section (``preset`` plus overrides; ``vocab_size: auto``
    takes the stream's vocabulary rounded up to a multiple of 128)."""
    section = dict(model_section or {})
    preset = section.pop("preset", None)
    base = dict(PRESETS[preset]) if preset else {}
    if preset and preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}")
    base.update(section)
    if base.get("vocab_size", "auto") == "auto":
        if stream is None or not stream.vocab_size:
            raise ValueError("vocab_size: auto needs a train stream whose manifest has vocab_size")
        base["vocab_size"] = 128 * math.ceil(stream.vocab_size / 128)
    base["max_seq_len"] = max(int(base.get("max_seq_len", seq_len)), seq_len)
    return ModelConfig.from_dict(base)


def load_init_weights(model: Transformer, path: str | Path) -> None:
    """Load the model weights of the checkpoint at ``path`` (a ``state.pt``, step folder or
    run directory) into ``model``; its stored model config must equal ``model.config``."""
    file = resolve_checkpoint(path)
    state = torch.load(file, map_location="cpu", weights_only=True)
    stored = state.get("model_config")
    if stored is None:
        raise ValueError(f"train.init_from {file}: checkpoint has no model_config")
    ours = model.config.to_dict()
    try:  # a checkpoint written before a field existed lacks its key: it takes the default
        stored = ModelConfig.from_dict(stored).to_dict()
    except ValueError as exc:
        raise ValueError(f"train.init_from {file}: stored model config: {exc}") from exc
    diff = sorted(k for k in set(stored) | set(ours) if stored.get(k) != ours.get(k))
    if diff:
        raise ValueError(f"train.init_from {file}: model config differs from this run's in "
                         f"{ {k: (stored.get(k), ours.get(k)) for k in diff} } (checkpoint, run); "
                         f"set the run's model section to the checkpoint's")
    model.load_state_dict(state["model"])


def _to_device(a: np.ndarray, device: torch.device) -> torch.Tensor:
    t = torch.from_numpy(a)
    if device.type == "cuda":
        return t.pin_memory().to(device, non_blocking=True)
    return t


class Checkpointer:
    """``out_dir/checkpoints/step_XXXXXXXX/state.pt`` plus a ``latest`` pointer; rank 0 writes."""

    def __init__(self, out_dir: Path, keep: int) -> None:
        self.dir = out_dir / "checkpoints"
        self.keep = keep

    def latest(self) -> Path | None:
        """The newest complete checkpoint, if any."""
        ptr = self.dir / "latest"
        if ptr.exists():
            p = self.dir / ptr.read_text().strip() / "state.pt"
            if p.exists():
                return p
        return None

    def save(self, state: dict[str, Any], step: int, is_main: bool) -> Path:
        """Write ``state`` atomically and prune old checkpoints; returns the file path."""
        name = f"step_{step:08d}"
        path = self.dir / name / "state.pt"
        if is_main:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".pt.tmp")
            torch.save(state, tmp)
            os.replace(tmp, path)
            ptr_tmp = self.dir / "latest.tmp"
            ptr_tmp.write_text(name)
            os.replace(ptr_tmp, self.dir / "latest")
            old = sorted(p for p in self.dir.glob("step_*") if p.is_dir() and p.name != name)
            for p in old[: max(0, len(old) - (self.keep - 1))]:
                shutil.rmtree(p, ignore_errors=True)
        parallel.barrier()
        return path


class MetricsLog:
    """Append-only JSONL metrics (rank 0)."""

    def __init__(self, path: Path, is_main: bool, resume_step: int | None) -> None:
        self.path = path
        self.is_main = is_main
        if is_main:
            path.parent.mkdir(parents=True, exist_ok=True)
            if resume_step is None:
                path.write_text("")
            elif path.exists():  # drop records past the checkpoint we resume from
                keep = [ln for ln in path.read_text().splitlines()
                        if ln.strip() and json.loads(ln).get("step", 0) <= resume_step]
                path.write_text("".join(ln + "\n" for ln in keep))

    def write(self, record: dict[str, Any]) -> None:
        """Append one record."""
        if self.is_main:
            with self.path.open("a") as f:
                f.write(json.dumps(record) + "\n")


def write_loss_plot(metrics_path: Path, out_path: Path) -> None:
    """SVG plot of train loss (line) and eval losses (points) against step, from the JSONL."""
    train: list[tuple[int, float]] = []
    evals: dict[str, list[tuple[int, float]]] = {}
    for ln in metrics_path.read_text().splitlines():
        if not ln.strip():
            continue
        r = json.loads(ln)
        if r.get("kind") == "train" and math.isfinite(r["loss"]):
            train.append((r["step"], r["loss"]))
        elif r.get("kind") == "eval":
            for k, v in r.items():
                if k.startswith("eval/") and math.isfinite(v):
                    evals.setdefault(k[5:], []).append((r["step"], v))
    pts = train + [p for v in evals.values() for p in v]
    if not pts:
        return
    W, H, M = 720, 420, 60
    x0, x1 = min(p[0] for p in pts), max(p[0] for p in pts)
    y0, y1 = min(p[1] for p in pts), max(p[1] for p in pts)
    x1, y1 = (x1 if x1 > x0 else x0 + 1), (y1 if y1 > y0 else y0 + 1e-3)

    def sx(x: float) -> float:
        return M + (x - x0) / (x1 - x0) * (W - 2 * M)

    def sy(y: float) -> float:
        return H - M - (y - y0) / (y1 - y0) * (H - 2 * M)

    colors = ["#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"]
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" '
           f'font-family="sans-serif" font-size="12">',
           f'<rect width="{W}" height="{H}" fill="white"/>',
           f'<line x1="{M}" y1="{H - M}" x2="{W - M}" y2="{H - M}" stroke="black"/>',
           f'<line x1="{M}" y1="{M}" x2="{M}" y2="{H - M}" stroke="black"/>']
    for i in range(5):
        yv = y0 + (y1 - y0) * i / 4
        xv = x0 + (x1 - x0) * i / 4
        out.append(f'<text x="{M - 6}" y="{sy(yv) + 4:.1f}" text-anchor="end">{yv:.3f}</text>')
        out.append(f'<text x="{sx(xv):.1f}" y="{H - M + 16}" text-anchor="middle">{xv:.0f}</text>')
    out.append(f'<text x="{W / 2}" y="{H - 15}" text-anchor="middle">step</text>')
    out.append(f'<text x="15" y="{H / 2}" transform="rotate(-90 15 {H / 2})" '
               f'text-anchor="middle">loss</text>')
    if train:
        line = " ".join(f"{sx(s):.1f},{sy(v):.1f}" for s, v in train)
        out.append(f'<polyline fill="none" stroke="#1f77b4" stroke-width="1.5" points="{line}"/>')
    legend = [("train", "#1f77b4")] if train else []
    for (name, vals), col in zip(evals.items(), colors, strict=False):
        legend.append((f"eval {name}", col))
        out += [f'<circle cx="{sx(s):.1f}" cy="{sy(v):.1f}" r="3.5" fill="{col}"/>'
                for s, v in vals]
    for i, (name, col) in enumerate(legend):
        y = M + 14 * i
        out.append(f'<rect x="{W - M - 140}" y="{y - 9}" width="10" height="10" fill="{col}"/>')
        out.append(f'<text x="{W - M - 125}" y="{y}">{name}</text>')
    out.append("</svg>")
    out_path.write_text("\n".join(out) + "\n")


@torch.no_grad()
def score_windows(fwd: Any, stream: TokenStream, plan: EvalPlan, idx: np.ndarray,
                  batch_size: int, device: torch.device, *, rank: int = 0, world: int = 1,
                  autocast: Any = contextlib.nullcontext, document_mask: Any = None
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Summed token NLL of the windows ``idx`` of ``plan``: per window and per document.

    Rank r scores windows ``idx[r::world]`` in batches of ``batch_size`` (padded with
    zero-weight windows so that every rank runs the same number of forward passes, as FSDP
    needs); the sums are then added over ranks. ``fwd(x, attn_mask=...)`` must return
    logits. ``document_mask`` (doc ids tensor -> attention mask) turns on document masking.
    Returns float64 arrays ``[len(idx)]`` and ``[plan.num_docs]``; each window's NLL does
    not depend on batch size or world size (rows of a batch are independent).
    """
    seq_len = plan.seq_len
    per_rank = -(-len(idx) // world)
    n_batches = -(-per_rank // batch_size)
    win = torch.zeros(len(idx), dtype=torch.float64, device=device)
    doc = torch.zeros(plan.num_docs, dtype=torch.float64, device=device)
    slots = np.arange(rank, len(idx), world)  # positions in idx this rank scores
    for b in range(n_batches):
        mine = slots[b * batch_size:(b + 1) * batch_size]
        real = len(mine)
        sel = np.concatenate([idx[mine], np.full(batch_size - real, idx[0], dtype=np.int64)])
        w = read_windows(stream, plan.starts[sel], seq_len, with_doc_ids=document_mask is not None)
        x, y = _to_device(w.inputs, device), _to_device(w.targets, device)
        mask = document_mask(_to_device(w.doc_ids, device)) if document_mask is not None else None
        with autocast():
            logits = fwd(x, attn_mask=mask)
        nll = nn.functional.cross_entropy(logits.float().reshape(-1, logits.size(-1)),
                                          y.reshape(-1), reduction="none").view(batch_size, -1)
        weight = plan.weights(sel)
        weight[real:] = 0.0
        nll = nll.double() * torch.from_numpy(weight).to(device)
        if real:
            win.index_add_(0, torch.from_numpy(mine).to(device), nll[:real].sum(dim=1))
        doc.index_add_(0, torch.from_numpy(plan.target_docs(sel).reshape(-1)).to(device),
                       nll.reshape(-1))
    if world > 1:
        parallel.all_reduce_sum(win)
        parallel.all_reduce_sum(doc)
    return win.cpu().numpy(), doc.cpu().numpy()


def init_digest(model: nn.Module) -> str:
    """A hash of a model's parameters and buffers (names, shapes, values): equal for two
    runs exactly when they start from the same weights."""
    import hashlib

    h = hashlib.blake2b(digest_size=16)
    for name, t in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


# --------------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------------


def load_config(path: str | Path, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Read a train config file and apply overrides (dotted keys or nested dicts)."""
    cfg = merge_overrides(load_config_file(path), overrides)
    if cfg.get("job", "train") != "train":
        raise ValueError(f"{path}: job is {cfg.get('job')!r}, expected 'train'")
    return cfg


def run_from_file(path: str | Path, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Train from a config file (entry point for ``pipeline run jobs/train.yaml``).

    Returns a summary dict: status, steps, final train/eval losses, tokens/s, MFU, paths.
    """
    return run(load_config(path, overrides))


TOP_LEVEL_KEYS = {"job", "name", "description", "model", "data", "train", "out_dir"}


def run(config: dict[str, Any]) -> dict[str, Any]:
    """Train with a parsed config dict (see module docstring); returns the run summary.

    A top-level ``out_dir`` (what ``pipeline run --output DIR`` passes) overrides
    ``train.out_dir``.
    """
    unknown = set(config) - TOP_LEVEL_KEYS
    if unknown:
        raise ValueError(f"unknown top-level keys in train config: {sorted(unknown)} "
                         f"(allowed: {sorted(TOP_LEVEL_KEYS)})")
    if config.get("out_dir"):
        config = {**config, "train": {**(config.get("train") or {}),
                                      "out_dir": str(config["out_dir"])}}
    data_cfg = _from_dict(DataConfig, config.get("data"), "data")
    if isinstance(data_cfg.eval, str):
        data_cfg.eval = {Path(data_cfg.eval).name: data_cfg.eval}
    elif isinstance(data_cfg.eval, list):
        data_cfg.eval = {Path(p).name: p for p in data_cfg.eval}
    tcfg = _from_dict(TrainConfig, config.get("train"), "train")
    if not data_cfg.train:
        raise ValueError("data.train (token stream directory) is required")

    if not tcfg.grad_clip >= 0:
        raise ValueError(f"train.grad_clip must be >= 0 (a large value or .inf: no clipping), "
                         f"not {tcfg.grad_clip!r}")
    if tcfg.sdpa_backend not in SDPA_BACKENDS:
        raise ValueError(f"train.sdpa_backend must be one of {SDPA_BACKENDS}, "
                         f"not {tcfg.sdpa_backend!r}")
    info = parallel.init_distributed(tcfg.device)
    try:
        # both active while the model compiles and runs
        with sdpa_backend(tcfg.sdpa_backend), \
                float32_matmuls(tcfg.tf32 and tcfg.dtype == "bf16"):
            return _train(config, data_cfg, tcfg, info)
    finally:
        parallel.destroy()


def _train(config: dict[str, Any], data_cfg: DataConfig, tcfg: TrainConfig,
           info: parallel.DistInfo) -> dict[str, Any]:
    device = info.device
    out_dir = Path(tcfg.out_dir)
    log = print if info.is_main else (lambda *a, **k: None)
    torch.manual_seed(tcfg.seed)

    # ---- data -------------------------------------------------------------------------------
    train_stream = TokenStream(data_cfg.train)
    seq_len = data_cfg.seq_len
    sampler = make_sampler(data_cfg.sampler, train_stream, seq_len, tcfg.seed,
                           with_doc_ids=data_cfg.doc_masking)
    B, accum, world = tcfg.batch_size, tcfg.grad_accum, info.world_size
    global_batch = B * accum * world
    # Every run with the same eval streams scores the same subset (eval_seed), whatever its
    # batch size or world size; the last step scores every window.
    n_subset = tcfg.eval_windows if tcfg.eval_windows is not None else tcfg.eval_batches * B
    eval_sets: dict[str, tuple[TokenStream, EvalPlan, np.ndarray]] = {}
    for name, path in data_cfg.eval.items():
        s = TokenStream(path)
        plan = eval_plan(s, seq_len)
        eval_sets[name] = (s, plan, eval_subset(plan, n_subset, tcfg.eval_seed))

    # ---- model ------------------------------------------------------------------------------
    mcfg = build_model_config(config.get("model", {}), seq_len, train_stream)
    model = Transformer(mcfg)
    if tcfg.init_from:
        load_init_weights(model, tcfg.init_from)
    digest = init_digest(model)  # same seed and model config -> same digest (paired arms)
    model = model.to(device)
    use_bf16 = tcfg.dtype == "bf16"
    autocast = (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if use_bf16 \
        else contextlib.nullcontext
    mode = tcfg.parallel if info.distributed else "none"
    wrapped = parallel.parallelize(model, mode, info,
                                   param_dtype=torch.bfloat16 if use_bf16 else None,
                                   options=parallel_options(tcfg))
    optimizer = build_optimizer(model, tcfg, device)
    if not (isinstance(tcfg.compile, bool) or tcfg.compile == "auto"):
        raise ValueError(f"train.compile must be true, false or auto, not {tcfg.compile!r}")
    do_compile = tcfg.compile if isinstance(tcfg.compile, bool) else device.type == "cuda"
    fwd = torch.compile(wrapped) if do_compile else wrapped
    flops_per_token = model.flops_per_token(seq_len)
    peak = tcfg.peak_flops or peak_flops_of(device)
    log(f"model: {model.num_params() / 1e6:.2f}M params "
        f"({model.num_params(active=True, embedding=False) / 1e6:.2f}M active non-embedding), "
        f"{flops_per_token / 1e9:.3f} GFLOP/token; device {device}, world {world}, "
        f"mode {mode}, compile {do_compile}, dtype {tcfg.dtype}")

    # ---- resume -----------------------------------------------------------------------------
    ckpt = Checkpointer(out_dir, tcfg.keep_checkpoints)
    start_step = 0
    latest = ckpt.latest() if tcfg.resume else None
    if latest is not None:
        state = torch.load(latest, map_location="cpu", weights_only=True)
        parallel.load_full_state_dicts(model, optimizer, mode, state["model"], state["optimizer"])
        sampler.load_state_dict(state["sampler"])
        start_step = int(state["step"])
        log(f"resumed from {latest} at step {start_step}")
    metrics = MetricsLog(out_dir / "metrics.jsonl", info.is_main,
                         start_step if latest is not None else None)
    if info.is_main:
        (out_dir / "config.json").write_text(json.dumps(
            {**config, "resolved_model": mcfg.to_dict(), "resolved_train": asdict(tcfg)},
            indent=2))

    def save(step: int, sampler_state: dict[str, Any]) -> Path:
        model_sd, optim_sd = parallel.full_state_dicts(model, optimizer, mode)
        state = {"step": step, "model": model_sd, "optimizer": optim_sd,
                 "sampler": sampler_state, "model_config": mcfg.to_dict(),
                 "world_size": world}
        return ckpt.save(state, step, info.is_main)

    def batch_for(starts: np.ndarray, stream: TokenStream, docs: bool):
        w = read_windows(stream, starts, seq_len, with_doc_ids=docs)
        x, y = _to_device(w.inputs, device), _to_device(w.targets, device)
        mask = model.document_mask(_to_device(w.doc_ids, device)) if docs else None
        return x, y, mask

    eval_docs: dict[str, str] = {}
    final_full: dict[str, float] = {}

    def evaluate(full: bool) -> dict[str, float]:
        """Mean loss on each stream's subset; with ``full`` also score every window, keep
        the whole-stream loss in ``final_full`` and save per-document sums."""
        wrapped.eval()
        results = {}
        for name, (stream, plan, subset) in eval_sets.items():
            idx = np.arange(len(plan), dtype=np.int64) if full else subset
            win, doc = score_windows(fwd, stream, plan, idx, B, device, rank=info.rank,
                                     world=world, autocast=autocast,
                                     document_mask=model.document_mask
                                     if data_cfg.doc_masking else None)
            counts = plan.window_tokens()
            pos = subset if full else np.arange(len(subset))
            results[name] = float(win[pos].sum() / counts[subset].sum())
            if full:
                tokens = plan.doc_tokens()
                final_full[name] = float(doc.sum() / tokens.sum())
                path = out_dir / "eval" / f"{name}.npy"
                if info.is_main:
                    path.parent.mkdir(parents=True, exist_ok=True)
                    np.save(path, np.stack([doc, tokens.astype(np.float64)], axis=1))
                eval_docs[name] = str(path)
        wrapped.train()
        return results

    # ---- loop -------------------------------------------------------------------------------
    params = [p for p in model.parameters() if p.requires_grad]
    train_losses: dict[int, float] = {}
    eval_history: dict[int, dict[str, float]] = {}
    last_eval: dict[str, float] = {}
    tokens_per_step = global_batch * seq_len
    t_log, tokens_since_log = time.perf_counter(), 0
    timed_tokens, timed_seconds = 0, 0.0
    status, step = "completed", start_step
    # The host reads a step's loss and gradient norm (HostCopy) only after the next step's
    # forward and backward are queued, so the GPU does not idle while the host reads: a
    # non-finite step is skipped on the device and stops the run when it is read. Steps
    # that log, evaluate or checkpoint are read at once.
    pending: tuple[int, HostCopy, dict[str, Any]] | None = None

    def settle(at: int, readback: HostCopy, state_before: dict[str, Any]) -> list[float]:
        """Step ``at``'s ``[loss, ce, aux, z, grad_norm]``; raises TrainingDiverged (with a
        checkpoint of step ``at - 1``, which the skipped step left as it was) when one is
        not finite."""
        vals = readback.get()
        loss, gnorm = vals[0], vals[4]
        if not all(map(math.isfinite, vals)):
            optimizer.zero_grad(set_to_none=True)  # the next step's, if it ran
            for m in model.moe_layers():  # and its routing counts: step at - 1 left them at 0
                m.reset_counts()
            for g in optimizer.param_groups:  # the learning rate step at - 1 used
                g["lr"] = lr_at(max(at - 2, 0), tcfg)
            path = save(at - 1, state_before)
            metrics.write({"kind": "diverged", "step": at, "loss": loss, "grad_norm": gnorm})
            log(f"step {at}: non-finite loss {loss} / grad norm {gnorm}; stopping, last good "
                f"state (step {at - 1}) at {path}")
            raise TrainingDiverged(at, loss, gnorm, path)
        train_losses[at] = loss
        return vals

    wrapped.train()
    while step < tcfg.max_steps:
        step += 1
        t_step = time.perf_counter()
        lr = lr_at(step - 1, tcfg)
        for g in optimizer.param_groups:
            g["lr"] = lr
        sampler_state = sampler.state_dict()
        starts = sampler.draw_starts(global_batch)
        micro = (batch_for(starts[(m * world + info.rank) * B:(m * world + info.rank + 1) * B],
                           train_stream, data_cfg.doc_masking) for m in range(accum))
        stats = accumulate_gradients(fwd, wrapped, mode, micro, accum, autocast, device)
        parallel.all_reduce_mean(stats)
        if pending is not None:  # the previous step's values, read while this one runs
            settle(*pending)
            pending = None
        # a non-finite step changes nothing
        readback, bad = finish_step(optimizer, params, stats, tcfg.grad_clip)
        moe_stats = model.consume_moe_stats(parallel.all_reduce_sum, keep=(~bad).float())
        halt = tcfg.halt_at_step is not None and step >= tcfg.halt_at_step
        is_log = step % tcfg.log_every == 0 or step == tcfg.max_steps
        is_eval = bool(eval_sets) and (step % tcfg.eval_every == 0 or step == tcfg.max_steps)
        is_ckpt = step % tcfg.ckpt_every == 0 or step == tcfg.max_steps or halt
        if is_log or is_eval or is_ckpt:
            loss, ce, aux, z, gnorm = settle(step, readback, sampler_state)
        else:
            pending = (step, readback, sampler_state)
        dt = time.perf_counter() - t_step
        tokens_since_log += tokens_per_step
        if step > start_step + 1:  # the first step includes compilation
            timed_tokens += tokens_per_step
            timed_seconds += dt

        if step == start_step + 1:  # the first step compiles: keep it out of every interval
            if device.type == "cuda":
                torch.cuda.synchronize(device)  # all of it, not only its host side
            t_log, tokens_since_log = time.perf_counter(), 0
        if is_log:
            now = time.perf_counter()
            tok_s = tokens_since_log / (now - t_log) if tokens_since_log else None
            mfu = flops_per_token * tok_s / (peak * world) if peak and tok_s else None
            rec: dict[str, Any] = {"kind": "train", "step": step, "loss": loss, "ce_loss": ce,
                                   "lr": lr, "grad_norm": gnorm, "tokens": step * tokens_per_step,
                                   "tokens_per_s": tok_s, "mfu": mfu}
            moe_txt = ""
            if moe_stats is not None:  # per MoE layer: expert load and dropped fraction
                load, dropped = moe_stats.load, moe_stats.dropped.tolist()
                rec.update(aux_loss=aux, z_loss=z, expert_load=load.tolist(),
                           max_load=float(load.max(dim=-1).values.mean() * load.shape[-1]),
                           dropped_frac=dropped)
                moe_txt = (f" | aux {aux:.3f} | max/mean load {rec['max_load']:.2f} | dropped "
                           f"{100 * sum(dropped) / len(dropped):.2f}% (max layer "
                           f"{100 * max(dropped):.2f}%)")
            metrics.write(rec)
            mfu_txt = f"{100 * mfu:.1f}%" if mfu is not None else "n/a"
            tok_txt = f"{tok_s:,.0f}" if tok_s is not None else "n/a (first step)"
            log(f"step {step}/{tcfg.max_steps} | loss {loss:.4f} | lr {lr:.2e} | gnorm {gnorm:.3f} "
                f"| {tok_txt} tok/s | mfu {mfu_txt}{moe_txt}", flush=True)
            t_log, tokens_since_log = time.perf_counter(), 0

        if is_eval:
            full = step == tcfg.max_steps and tcfg.eval_full_final
            last_eval = evaluate(full)
            eval_history[step] = last_eval
            rec = {"kind": "eval", "step": step, **{f"eval/{k}": v for k, v in last_eval.items()}}
            if full:
                rec.update({f"eval_full/{k}": v for k, v in final_full.items()})
            metrics.write(rec)
            log(f"step {step} eval | " + " | ".join(f"{k} {v:.4f}" for k, v in last_eval.items())
                + ("" if not full else " | whole sets: " + " | ".join(
                    f"{k} {v:.4f}" for k, v in final_full.items())), flush=True)
            t_log = time.perf_counter()  # keep eval time out of tokens/s

        if is_ckpt:
            save(step, sampler.state_dict())
            t_log = time.perf_counter()
        if halt:
            status = "halted"
            break

    if info.is_main and tcfg.plot and metrics.path.exists():
        write_loss_plot(metrics.path, out_dir / "loss.svg")
    tok_s = timed_tokens / timed_seconds if timed_seconds else None
    return {
        "status": status,
        "steps": step,
        "final_train_loss": train_losses.get(step),
        # whole eval sets at the last step when scored there, else the last subset values
        "final_eval": final_full or last_eval,
        "final_eval_subset": last_eval,
        "eval_docs": eval_docs,
        "eval_subset_windows": {k: int(len(v[2])) for k, v in eval_sets.items()},
        "init_digest": digest,
        "sampler": {"kind": sampler.kind, "seed": tcfg.seed,
                    "windows_drawn": sampler.windows_drawn,
                    "epochs": getattr(sampler, "epochs", sampler.windows_drawn * seq_len
                                      / max(1, train_stream.num_tokens))},
        "train_losses": train_losses,
        "eval_losses": eval_history,
        "tokens_per_s": tok_s,
        "mfu": (flops_per_token * tok_s / (peak * world)) if (tok_s and peak) else None,
        "params": model.num_params(),
        "checkpoint_dir": str(ckpt.dir),
        "metrics_path": str(metrics.path),
        "plot_path": str(out_dir / "loss.svg"),
        "out_dir": str(out_dir),
    }


def main(argv: list[str] | None = None) -> int:
    """CLI: ``python -m model.train CONFIG [--set key=value ...]`` (also under torchrun)."""
    ap = argparse.ArgumentParser(prog="python -m model.train", description=__doc__.split("\n")[0])
    ap.add_argument("config", help="train config (.yaml subset or .json) with job: train")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a config value, e.g. --set train.max_steps=100")
    args = ap.parse_args(argv)
    try:
        overrides = parse_set_options(args.set)
    except ConfigError as exc:
        ap.error(str(exc))
    try:
        summary = run_from_file(args.config, overrides)
    except TrainingDiverged as e:
        print(f"training diverged: {e}", file=sys.stderr)
        return 1
    if int(os.environ.get("RANK", "0")) == 0:
        brief = {k: v for k, v in summary.items() if k not in ("train_losses", "eval_losses")}
        print(json.dumps(brief, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
