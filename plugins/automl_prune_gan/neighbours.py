"""Neighbourhoods of generator inputs, and the tuples the local-density discriminator judges.

Each centre input x_c gets ``k`` neighbours: the same image shifted by up to ``shift`` pixels
(reflection-padded, so no wrap-around), then for continuous images a light brightness/contrast jitter,
and for binary edge maps (values in {-1, 1}) a 3x3 dilation with probability one half instead, since
jitter would make an edge map non-binary. A generator maps the centre and its neighbours to a
neighbourhood tuple [G(x_c), G(x_n1), ..., G(x_nk)]; concatenated along channels, it shows a
discriminator how the generator's output moves around x_c: its local density structure.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def is_binary(x: torch.Tensor) -> bool:
    """Whether ``x`` is an edge map in {-1, 1}."""
    return bool(((x == 1) | (x == -1)).all())


def _shift(x: torch.Tensor, dy: int, dx: int, pad: int) -> torch.Tensor:
    h, w = x.shape[-2:]
    padded = F.pad(x.unsqueeze(0), (pad, pad, pad, pad), mode="reflect")[0]
    return padded[..., pad + dy : pad + dy + h, pad + dx : pad + dx + w]


def neighbours(
    x: torch.Tensor,
    k: int,
    *,
    shift: int = 2,
    jitter: float = 0.1,
    binary: bool = False,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """``k`` perturbed copies of every image of ``x`` (N, C, H, W): shape (N, k, C, H, W)."""
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    n = len(x)
    offsets = torch.randint(-shift, shift + 1, (n, k, 2), generator=generator).tolist()
    out = torch.stack([torch.stack([_shift(x[i], dy, dx, shift) for dy, dx in offsets[i]]) for i in range(n)])
    if binary:
        dilate = torch.rand(n, k, 1, 1, 1, generator=generator) < 0.5
        grown = F.max_pool2d(out.flatten(0, 1), 3, 1, 1).view_as(out)
        return torch.where(dilate.to(out.device), grown, out)
    u = torch.rand(2, n, k, 1, 1, 1, generator=generator).to(out) * 2 - 1
    mean = out.mean(dim=(-3, -2, -1), keepdim=True)
    return ((out - mean) * (1 + jitter * u[0]) + mean + jitter * u[1]).clamp(-1, 1)


def tuple_of(generator: nn.Module, centre: torch.Tensor, near: torch.Tensor) -> torch.Tensor:
    """[G(x_c), G(x_n1..k)] concatenated along channels: (N, (k+1) * C_out, H, W)."""
    n, k = near.shape[:2]
    out = generator(torch.cat([centre, near.flatten(0, 1)]))
    first, rest = out[:n], out[n:].view(n, k, *out.shape[1:])
    return torch.cat([first.unsqueeze(1), rest], dim=1).flatten(1, 2)
