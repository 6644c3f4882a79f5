"""A dtype cast that ``torch.compile`` keeps as one tensor, saved for the backward.

Left to inductor, the bf16 casts of the MoE's float32 expert weights were fused into cast
kernels that read the float32 matrices more than once per step, some writing two bf16 copies
of a matrix (one per layout the grouped GEMMs read): 44 cast kernels and 0.84 ms per step of
the 125M MoE on an H100. A custom op is opaque to inductor: the cast is one copy per matrix
(24 kernels, 0.45 ms), its result is saved for the backward like any matmul input, which is
what eager autocast does with the weights it casts, and the grouped GEMMs read its transpose
as a strided view (``benchmarks/RESULTS.md``).

No ``from __future__ import annotations`` here: ``torch.library`` reads the custom op's
signature from its annotations.
"""

import torch


@torch.library.custom_op("refinery::cast_saved", mutates_args=())
def _cast(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return x.to(dtype)


@_cast.register_fake
def _cast_fake(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return torch.empty_like(x, dtype=dtype)


def _cast_setup(ctx, inputs, output) -> None:  # noqa: ANN001 - torch.library's signature
    ctx.source_dtype = inputs[0].dtype


def _cast_backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:  # noqa: ANN001
    return grad.to(ctx.source_dtype), None


_cast.register_autograd(_cast_backward, setup_context=_cast_setup)


def cast_saved(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``x.to(dtype)``, differentiable; under ``torch.compile`` one copy, opaque to inductor,
    that the backward takes as a saved tensor. Returns ``x`` itself when it already has
    ``dtype`` (a custom op may not return its input)."""
    return x if x.dtype == dtype else _cast(x, dtype)
