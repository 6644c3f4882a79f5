"""Data parallelism for the trainer (torchtitan-style: kept apart from model and loop).

Under ``torchrun`` (``WORLD_SIZE > 1``) the process group is NCCL on CUDA and gloo on CPU.
``mode`` ``"ddp"`` wraps the model in DistributedDataParallel; ``"fsdp"`` shards each block
and then the root with FSDP2 (``fully_shard``), with bf16 parameters and float32 gradient
reduction on CUDA. Checkpoints are written as full (unsharded) state dicts by rank 0 in both
modes, so a run can resume under either.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn


@dataclass
class DistInfo:
    """Where this process sits: rank, world size and its device."""

    rank: int
    local_rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        """Rank 0 writes logs, metrics and checkpoints."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """More than one process."""
        return self.world_size > 1


def init_distributed(device: str = "auto") -> DistInfo:
    """Initialise the process group if launched by torchrun and pick this rank's device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type == "cuda":
        dev = torch.device("cuda", local_rank)
        torch.cuda.set_device(dev)
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if dev.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, timeout=datetime.timedelta(minutes=30),
                                **({"device_id": dev} if dev.type == "cuda" else {}))
    return DistInfo(rank, local_rank, world, dev)


def destroy() -> None:
    """Tear down the process group if there is one."""
    if dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """In-place sum over ranks (no-op when not distributed); returns ``t``."""
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def all_reduce_mean(t: torch.Tensor) -> torch.Tensor:
    """In-place mean over ranks; returns ``t``."""
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        t.div_(dist.get_world_size())
    return t


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank ``src``'s ``obj`` on every rank."""
    if not (dist.is_initialized() and dist.get_world_size() > 1):
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def barrier() -> None:
    """Wait for all ranks."""
    if dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


def parallelize(model: nn.Module, mode: str, info: DistInfo,
                param_dtype: torch.dtype | None = None) -> nn.Module:
    """Wrap ``model`` for data parallelism (``"none"``, ``"ddp"`` or ``"fsdp"``)."""
    if mode == "none" or not info.distributed:
        return model
    if mode == "ddp":
        from torch.nn.parallel import DistributedDataParallel as DDP

        # Buffers are not broadcast: the MoE load counters are rank-local until all-reduced.
        ids = [info.device.index] if info.device.type == "cuda" else None
        return DDP(model, device_ids=ids, broadcast_buffers=False)
    if mode == "fsdp":
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

        mp = MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=torch.float32)
        for block in model.layers:  # type: ignore[attr-defined]
            fully_shard(block, mp_policy=mp)
        fully_shard(model, mp_policy=mp)
        return model
    raise ValueError(f"unknown parallel mode {mode!r} (none, ddp, fsdp)")


def set_grad_sync(wrapped: nn.Module, mode: str, enabled: bool) -> Callable[[], Any]:
    """Context factory that (dis)ables gradient all-reduce for accumulation micro-steps."""
    import contextlib

    if mode == "ddp" and hasattr(wrapped, "no_sync") and not enabled:
        return wrapped.no_sync  # type: ignore[return-value]
    if mode == "fsdp" and hasattr(wrapped, "set_requires_gradient_sync"):
        wrapped.set_requires_gradient_sync(enabled)  # type: ignore[operator]
    return contextlib.nullcontext


def full_state_dicts(model: nn.Module, optimizer: torch.optim.Optimizer,
                     mode: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Unsharded model and optimizer state dicts (on CPU for FSDP; collective for FSDP)."""
    if mode == "fsdp" and dist.is_initialized():
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict

        opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
        return get_state_dict(model, optimizer, options=opts)
    return model.state_dict(), optimizer.state_dict()


def load_full_state_dicts(model: nn.Module, optimizer: torch.optim.Optimizer, mode: str,
                          model_sd: dict[str, Any], optim_sd: dict[str, Any]) -> None:
    """Load unsharded state dicts written by :func:`full_state_dicts` (every rank holds them)."""
    if mode == "fsdp" and dist.is_initialized():
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_state_dict

        set_state_dict(model, optimizer, model_state_dict=model_sd, optim_state_dict=optim_sd,
                       options=StateDictOptions(full_state_dict=True))
        return
    model.load_state_dict(model_sd)
    optimizer.load_state_dict(optim_sd)
