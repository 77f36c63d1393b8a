"""A small U-Net for image-to-image translation (Pix2Pix-style generators).

It is the toolbox's test bed for concatenation skips: every decoder level concatenates the upsampled
deeper features with the encoder features of the same resolution, so one conv's input channels come
from two independently prunable channel groups.
"""

from __future__ import annotations

import math

import torch
from torch import nn

NORMS = ("batch", "instance", "group")
GROUP_NORM_GROUPS = 4


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "instance":
        return nn.InstanceNorm2d(channels, affine=True)
    return nn.GroupNorm(math.gcd(GROUP_NORM_GROUPS, channels), channels)


class ConvBlock(nn.Sequential):
    """Two 3x3 conv-norm-ReLU layers."""

    def __init__(self, in_channels: int, out_channels: int, norm: str) -> None:
        super().__init__(
            nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
            _norm(norm, out_channels),
            nn.ReLU(),
            nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
            _norm(norm, out_channels),
            nn.ReLU(),
        )


class SmallUNet(nn.Module):
    """Encoder of ``depth`` levels (widths base * 2**i, max-pool between), decoder with nearest upsampling
    and ``torch.cat`` skips, a final 1x1 conv and tanh (outputs in [-1, 1], like Pix2Pix).

    Input height and width must be divisible by 2 ** (depth - 1).
    """

    def __init__(
        self, in_channels: int = 3, out_channels: int = 3, base: int = 16, depth: int = 3, norm: str = "batch"
    ) -> None:
        super().__init__()
        if norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
        if depth < 2:
            raise ValueError(f"a U-Net needs depth >= 2, got {depth}")
        widths = [base * 2**i for i in range(depth)]
        self.encoders = nn.ModuleList()
        channels = in_channels
        for width in widths:
            self.encoders.append(ConvBlock(channels, width, norm))
            channels = width
        self.pool = nn.MaxPool2d(2)
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.decoders = nn.ModuleList(
            ConvBlock(widths[i + 1] + widths[i], widths[i], norm) for i in reversed(range(depth - 1))
        )
        self.head = nn.Conv2d(widths[0], out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for i, encoder in enumerate(self.encoders):
            x = encoder(x if i == 0 else self.pool(x))
            skips.append(x)
        x = skips.pop()
        for decoder in self.decoders:
            x = decoder(torch.cat([self.up(x), skips.pop()], dim=1))
        return torch.tanh(self.head(x))
