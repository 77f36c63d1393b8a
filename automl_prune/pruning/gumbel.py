"""Gumbel-sigmoid gates: a differentiable sample of a keep/remove decision per channel.

v = sigmoid((z + g + b) / T) with logistic noise g. The offset b (default 3) makes gates start open,
so training begins from the full network; a low temperature T (default 0.4) makes v nearly binary.
Hard gates are exactly 0 or 1 in the forward pass and pass the gradient of v straight through.
"""

from __future__ import annotations

import torch

TEMPERATURE = 0.4
OFFSET = 3.0


class _StraightThrough(torch.autograd.Function):
    """Forward 1[v >= 0.5] exactly (no ``hard + v - v.detach()`` rounding), backward identity."""

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, soft: torch.Tensor) -> torch.Tensor:
        return (soft >= 0.5).to(soft.dtype)

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor) -> torch.Tensor:
        return grad


def gumbel_sigmoid(
    logits: torch.Tensor,
    temperature: float = TEMPERATURE,
    offset: float = OFFSET,
    *,
    hard: bool = True,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Sample gates from ``logits``: soft values in (0, 1), or hard 0/1 with straight-through gradients."""
    u = torch.rand(logits.shape, generator=generator, dtype=logits.dtype, device=logits.device)
    u = u.clamp(torch.finfo(logits.dtype).tiny, 1 - torch.finfo(logits.dtype).eps)
    soft = torch.sigmoid((logits + torch.log(u) - torch.log1p(-u) + offset) / temperature)
    return _StraightThrough.apply(soft) if hard else soft


def deterministic_gates(logits: torch.Tensor, offset: float = OFFSET) -> torch.Tensor:
    """The noise-free decision 1[z + b >= 0], e.g. to read off the final architecture."""
    return (logits + offset >= 0).to(logits.dtype)
