"""A conv layer whose kernel size is a differentiable input: weights at K_max, a soft separable mask.

For a soft size ``s`` in [1, K_max] the layer uses ``k = nearest_odd(s)`` (odd, so "same" padding
stays exact) and the ``k x k`` centre of its K_max weights, times the separable mask
``m(i) m(j)`` with ``m(i) = sigmoid(beta * (s / 2 - |i - c|))``. Weights outside the ``k x k`` crop are
exactly zero (the hard crop), so the conv is computed at ``k x k`` with padding ``(k - 1) / 2``: the
search costs what the current sizes cost, not K_max everywhere. Gradients reach ``s`` only through
the mask, as the method asks.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def nearest_odd(size: float | torch.Tensor, k_max: int) -> int:
    """The odd integer nearest to ``size`` (halves round up), within [1, k_max]."""
    value = float(size)
    return int(min(max(2 * math.floor((value - 1) / 2 + 0.5) + 1, 1), k_max))


def ring_index(k: int) -> torch.Tensor:
    """|i - c| for the ``k`` positions of a ``k``-wide kernel (c its centre)."""
    return (torch.arange(k) - (k - 1) / 2).abs()


def soft_mask(size: torch.Tensor, k: int, sharpness: float) -> torch.Tensor:
    """The ``k x k`` separable mask m(i) m(j) of a soft size (differentiable in ``size``)."""
    m = torch.sigmoid(sharpness * (size / 2 - ring_index(k).to(size)))
    return m[:, None] * m[None, :]


def ring_map(gains: torch.Tensor, k: int) -> torch.Tensor:
    """A ``k x k`` map whose square ring r (Chebyshev distance from the centre) has ``gains[r]``."""
    r = ring_index(k).long()
    return gains[torch.maximum(r[:, None], r[None, :])]


class SizeSearchConv(nn.Module):
    """A searchable stand-in for a ``Conv2d`` with an odd square kernel and "same" padding.

    The searchable network sets ``size`` (a 0-d tensor, the soft size), optionally ``gains`` (ring
    gains from the kernel predictor) and ``fixed`` (a hard size that overrides the rounding, used after
    the budget repair) before each forward. ``hard = True`` drops the soft mask (the crop stays).
    """

    def __init__(self, conv: nn.Conv2d, k_max: int, sharpness: float) -> None:
        super().__init__()
        self.in_channels, self.out_channels = conv.in_channels, conv.out_channels
        self.stride, self.groups, self.k_max, self.sharpness = conv.stride, conv.groups, k_max, sharpness
        self.base_size = conv.kernel_size[0]
        self.weight = nn.Parameter(embed_centre(conv.weight.detach(), k_max))
        self.bias = nn.Parameter(conv.bias.detach().clone()) if conv.bias is not None else None
        self.size: torch.Tensor = torch.tensor(float(self.base_size))
        self.gains: torch.Tensor | None = None
        self.fixed: int | None = None
        self.hard = False

    def kernel_size_now(self) -> int:
        """The hard size the next forward uses."""
        return self.fixed if self.fixed is not None else nearest_odd(self.size.detach(), self.k_max)

    def effective_weight(self) -> torch.Tensor:
        """The ``k x k`` weights the next forward convolves with."""
        k = self.kernel_size_now()
        start = (self.k_max - k) // 2
        weight = self.weight[..., start : start + k, start : start + k]
        if not self.hard:
            weight = weight * soft_mask(self.size, k, self.sharpness)
        if self.gains is not None:
            weight = weight * ring_map(self.gains, k)
        return weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.effective_weight()
        pad = (weight.shape[-1] - 1) // 2
        return F.conv2d(x, weight, self.bias, self.stride, pad, 1, self.groups)

    def to_conv(self) -> nn.Conv2d:
        """A plain ``Conv2d`` at the current hard size holding the current effective weights."""
        weight = self.effective_weight().detach()
        conv = same_padding_conv(self, weight.shape[-1]).to(weight)
        with torch.no_grad():
            conv.weight.copy_(weight)
            if self.bias is not None:
                conv.bias.copy_(self.bias)
        return conv


def same_padding_conv(like: nn.Conv2d | SizeSearchConv, k: int) -> nn.Conv2d:
    """A fresh ``k x k`` Conv2d with ``like``'s channels, stride, groups and bias, padding (k - 1) / 2."""
    return nn.Conv2d(
        like.in_channels,
        like.out_channels,
        k,
        like.stride,
        (k - 1) // 2,
        groups=like.groups,
        bias=like.bias is not None,
    )


def embed_centre(weight: torch.Tensor, k: int) -> torch.Tensor:
    """``weight``'s kernels placed in the centre of ``k x k`` zeros (or centre-cropped if larger)."""
    size = weight.shape[-1]
    if size >= k:
        start = (size - k) // 2
        return weight[..., start : start + k, start : start + k].clone()
    pad = (k - size) // 2
    return F.pad(weight, (pad, pad, pad, pad))
