"""model/parallel.py settings: ParallelOptions checks, the trainer's train.ddp_*/fsdp_* fields,
and the SDPA backend choice of model/attention.py that the trainer exposes beside them.
(World-size-2 training with these settings: tests/model/test_train_distributed.py.)"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from model.attention import sdpa_backend
from model.parallel import ParallelOptions
from model.train import TrainConfig, parallel_options, run


@pytest.mark.parametrize("field,value", [("fsdp_reshard", "some"), ("fsdp_reduce_dtype", "fp8"),
                                         ("ddp_reduce_dtype", "int8"), ("fsdp_prefetch", 0),
                                         ("ddp_bucket_cap_mb", 0.0)])
def test_bad_parallel_option_is_refused_with_its_name(field, value):
    with pytest.raises(ValueError, match=f"train.{field}"):
        ParallelOptions(**{field: value})


def test_train_fields_map_onto_parallel_options():
    cfg = TrainConfig(ddp_bucket_cap_mb=50, ddp_static_graph=True, ddp_grad_as_bucket_view=False,
                      ddp_reduce_dtype="bf16", fsdp_reshard="none", fsdp_prefetch=3,
                      fsdp_reduce_dtype="bf16")
    assert parallel_options(cfg) == ParallelOptions(
        ddp_bucket_cap_mb=50.0, ddp_static_graph=True, ddp_grad_as_bucket_view=False,
        ddp_reduce_dtype="bf16", fsdp_reshard="none", fsdp_prefetch=3, fsdp_reduce_dtype="bf16")
    assert parallel_options(TrainConfig()) == ParallelOptions()


@pytest.mark.parametrize("override,match", [({"fsdp_reshard": "half"}, "train.fsdp_reshard"),
                                            ({"sdpa_backend": "xformers"}, "sdpa_backend")])
def test_trainer_refuses_a_bad_setting_before_training(tmp_path, tiny_config: Callable,
                                                       override, match):
    with pytest.raises(ValueError, match=match):
        run(tiny_config(tmp_path, **override))


def test_sdpa_backend_puts_the_named_kernel_first_and_restores_the_order():
    from torch.nn.attention import SDPBackend

    before = torch._C._get_sdp_priority_order()
    with sdpa_backend("cudnn"):
        assert torch._C._get_sdp_priority_order()[0] == int(SDPBackend.CUDNN_ATTENTION)
    with sdpa_backend("flash"):
        assert torch._C._get_sdp_priority_order()[0] == int(SDPBackend.FLASH_ATTENTION)
    with sdpa_backend("auto"):
        assert torch._C._get_sdp_priority_order() == before
    assert torch._C._get_sdp_priority_order() == before
    with pytest.raises(ValueError, match="sdpa backend"):
        with sdpa_backend("xformers"):
            pass
