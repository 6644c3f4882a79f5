"""World-size-2 data parallel training on CPU (gloo) under torchrun: DDP and FSDP2 (with resume)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from model.train import run


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(cfg: dict, path: Path, repo_root: Path) -> subprocess.CompletedProcess:
    path.write_text(json.dumps(cfg))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(repo_root)}
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(var, None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
           "--master_addr=127.0.0.1",
           f"--master_port={_free_port()}", "-m", "model.train", str(path)]
    return subprocess.run(cmd, cwd=repo_root, env=env, capture_output=True, text=True, timeout=240)


def _losses(run_dir: Path) -> dict[int, float]:
    recs = [json.loads(ln) for ln in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in recs if r["kind"] == "train"}


@pytest.mark.parametrize("mode", ["ddp", "fsdp"])
def test_world_size_two_matches_single_process_with_accumulation(tmp_path, mode,
                                                                 tiny_config: Callable,
                                                                 repo_root: Path):
    # Two ranks x batch 2 x accum 1 sees the same windows per step as one process with
    # batch 2 x accum 2 (the sampler draws the global batch; ranks take slices).
    single = tiny_config(tmp_path / "single", batch_size=2, grad_accum=2, max_steps=4,
                         eval_every=4, parallel="none")
    ref = run(single)
    dist_cfg = tiny_config(tmp_path / "dist", batch_size=2, grad_accum=1, max_steps=4,
                           eval_every=4, parallel=mode)
    if mode == "fsdp":  # also: interrupt after step 2 and resume from the sharded model
        dist_cfg["train"]["halt_at_step"] = 2
        proc = _torchrun(dist_cfg, tmp_path / "dist.json", repo_root)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        assert '"status": "halted"' in proc.stdout
        dist_cfg["train"]["halt_at_step"] = None
    proc = _torchrun(dist_cfg, tmp_path / "dist.json", repo_root)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    if mode == "fsdp":
        assert "resumed from" in proc.stdout
    got = _losses(Path(dist_cfg["train"]["out_dir"]))
    assert list(got) == [1, 2, 3, 4]
    for step, loss in ref["train_losses"].items():
        assert got[step] == pytest.approx(loss, rel=1e-4), step
    assert "world 2" in proc.stdout
    assert (Path(dist_cfg["train"]["out_dir"]) / "checkpoints" / "step_00000004" / "state.pt").exists()


@pytest.mark.parametrize("mode,options", [
    ("ddp", {"ddp_grad_as_bucket_view": False, "ddp_bucket_cap_mb": 0.01}),
    ("fsdp", {"fsdp_reshard": "all", "fsdp_prefetch": 1}),
    ("fsdp", {"fsdp_reshard": "none", "fsdp_prefetch": 3})])
def test_world_size_two_with_other_parallel_settings_matches_single_process(
        tmp_path, mode, options, tiny_config: Callable, repo_root: Path):
    # The settings before model_scaling tuned the defaults, tiny DDP buckets (several
    # all-reduces per step) and FSDP2 without resharding plus deeper prefetch: same losses.
    ref = run(tiny_config(tmp_path / "single", batch_size=2, grad_accum=2, max_steps=3,
                          eval_every=3, parallel="none"))
    cfg = tiny_config(tmp_path / "dist", batch_size=2, grad_accum=1, max_steps=3, eval_every=3,
                      parallel=mode, **options)
    proc = _torchrun(cfg, tmp_path / "dist.json", repo_root)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    got = _losses(Path(cfg["train"]["out_dir"]))
    assert list(got) == [1, 2, 3]
    for step, loss in ref["train_losses"].items():
        assert got[step] == pytest.approx(loss, rel=1e-4), step


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available() or torch.cuda.device_count() < 2,
                    reason="needs 2 CUDA GPUs")
@pytest.mark.parametrize("mode", ["ddp", "fsdp"])
def test_two_gpus_compiled_bf16_match_one_gpu(tmp_path, mode, tiny_config: Callable,
                                              repo_root: Path):
    # NCCL, torch.compile of the wrapped model (FSDP2: per-block graphs and the compiled
    # head), bf16: the losses of one GPU with two accumulation steps, within bf16 rounding.
    def cfg(root: Path, **train) -> dict:
        c = tiny_config(root, device="cuda", compile=True, batch_size=2, max_steps=6,
                        eval_every=6, **train)
        c["model"].update(d_model=64, n_heads=4, d_ff=128)
        return c

    ref = run(cfg(tmp_path / "single", grad_accum=2, parallel="none"))
    dist_cfg = cfg(tmp_path / "dist", grad_accum=1, parallel=mode)
    proc = _torchrun(dist_cfg, tmp_path / "dist.json", repo_root)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "world 2" in proc.stdout and f"mode {mode}" in proc.stdout
    got = _losses(Path(dist_cfg["train"]["out_dir"]))
    assert list(got) == list(range(1, 7))
    for step, loss in ref["train_losses"].items():
        assert got[step] == pytest.approx(loss, rel=2e-2), step
