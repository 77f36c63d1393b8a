"""Gumbel relaxations: differentiable samples of discrete architecture decisions.

Gumbel-sigmoid gates decide keep/remove per channel: v = sigmoid((z + g + b) / T) with logistic noise
g. The offset b (default 3) makes gates start open, so training begins from the full network; a low
temperature T (default 0.4) makes v nearly binary. Gumbel-softmax picks one of several options (e.g. an
expert's depth/width configuration): y = softmax((z + g) / T) with Gumbel noise g over the last dim.
Hard samples are exactly 0/1 (one-hot) in the forward pass and pass the soft gradient straight through
(``hard_threshold`` does this for any soft gate values).
``annealed_temperature`` lowers T during training so the relaxation ends close to the discrete choice.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

TEMPERATURE = 0.4
OFFSET = 3.0


class _StraightThrough(torch.autograd.Function):
    """Forward ``decide(soft)`` exactly (no ``hard + v - v.detach()`` rounding), backward identity."""

    @staticmethod
    def forward(
        ctx: torch.autograd.function.FunctionCtx,
        soft: torch.Tensor,
        decide: Callable[[torch.Tensor], torch.Tensor],
    ) -> torch.Tensor:
        return decide(soft)

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return grad, None


def _threshold(soft: torch.Tensor) -> torch.Tensor:
    return (soft >= 0.5).to(soft.dtype)


def hard_threshold(soft: torch.Tensor) -> torch.Tensor:
    """Exactly 1[soft >= 0.5] forward, the identity backward: decide gates yet let their values learn."""
    return _StraightThrough.apply(soft, _threshold)


def _one_hot_of_max(soft: torch.Tensor) -> torch.Tensor:
    return torch.zeros_like(soft).scatter_(-1, soft.argmax(-1, keepdim=True), 1.0)


def _uniform(logits: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """U(0, 1) noise of the logits' shape, kept off 0 and 1 so its logarithms stay finite."""
    u = torch.rand(logits.shape, generator=generator, dtype=logits.dtype, device=logits.device)
    return u.clamp(torch.finfo(logits.dtype).tiny, 1 - torch.finfo(logits.dtype).eps)


def gumbel_sigmoid(
    logits: torch.Tensor,
    temperature: float = TEMPERATURE,
    offset: float = OFFSET,
    *,
    hard: bool = True,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Sample gates from ``logits``: soft values in (0, 1), or hard 0/1 with straight-through gradients."""
    u = _uniform(logits, generator)
    soft = torch.sigmoid((logits + torch.log(u) - torch.log1p(-u) + offset) / temperature)
    return hard_threshold(soft) if hard else soft


def gumbel_softmax(
    logits: torch.Tensor,
    temperature: float,
    *,
    hard: bool = False,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Sample a relaxed one-hot choice over the last dim of ``logits`` (rows sum to 1).

    Hard samples are the exact one-hot of the soft sample's largest entry, with the soft sample's
    gradient: the forward pass uses one discrete option while every option's logit still learns.
    """
    gumbel = -torch.log(-torch.log(_uniform(logits, generator)))
    soft = torch.softmax((logits + gumbel) / temperature, dim=-1)
    return _StraightThrough.apply(soft, _one_hot_of_max) if hard else soft


def annealed_temperature(step: int, total: int, start: float = 1.0, end: float = 0.1) -> float:
    """The temperature at ``step`` of ``total``: exponential decay from ``start`` to ``end``.

    Exponential (as in Jang et al.'s Gumbel-softmax and FBNet): the relaxation's sharpness goes with
    1/T, and T falls by the same factor every step, so it sharpens at an even pace; a linear schedule
    would stay warm for most steps and then double the sharpness in its last tenth (1.0 to 0.1: from 0.2
    to 0.1). Steps past ``total`` stay at ``end``.
    """
    if total < 1 or start <= 0 or end <= 0:
        raise ValueError(f"need total >= 1 and positive temperatures, got {total=}, {start=}, {end=}")
    return start * (end / start) ** (min(max(step, 0), total) / total)


def deterministic_gates(logits: torch.Tensor, offset: float = OFFSET) -> torch.Tensor:
    """The noise-free decision 1[z + b >= 0], e.g. to read off the final architecture."""
    return (logits + offset >= 0).to(logits.dtype)
