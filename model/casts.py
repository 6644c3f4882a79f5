"""A dtype cast whose result the backward reuses instead of recomputing.

Under ``torch.compile`` the partitioner recomputes cheap elementwise ops in the backward
rather than keep their outputs alive, and a cast counts as cheap. For the MoE's expert weights
(``E`` experts' worth of float32 matrices, cast to bf16 for the grouped GEMMs) that meant a
second full cast of every expert matrix in each backward: 22 kernels and 0.84 ms per step of
the 125M MoE on an H100, half of it repeated work (``benchmarks/RESULTS.md``). A custom op is
opaque to the partitioner, so its output is saved like any matmul's input, which is what eager
autocast does with the weights it casts.

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
    """``x.to(dtype)``, differentiable, with the result kept for the backward under
    ``torch.compile`` rather than cast again there. Returns ``x`` itself when it already has
    ``dtype`` (a custom op may not return its input)."""
    return x if x.dtype == dtype else _cast(x, dtype)
