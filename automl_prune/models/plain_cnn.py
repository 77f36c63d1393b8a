"""A plain (VGG-style) CNN: stages of conv-BN-ReLU layers, 2x2 max-pooling between stages.

No residual adds or concatenations, so it is the simplest network to prune or to search kernel sizes
on, and the "plain CNN" that kernel-size methods are usually shown on besides ResNets.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class PlainCNN(nn.Module):
    """``len(widths)`` stages of ``depth`` conv-BN-ReLU layers (``kernel_size``, "same" padding), then
    global average pooling and a linear classifier ``fc``."""

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 3,
        widths: Sequence[int] = (16, 32, 64),
        depth: int = 2,
        kernel_size: int = 3,
    ) -> None:
        super().__init__()
        if kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd to keep 'same' padding, got {kernel_size}")
        layers: list[nn.Module] = []
        channels = in_channels
        for i, width in enumerate(widths):
            if i:
                layers.append(nn.MaxPool2d(2))
            for _ in range(depth):
                layers += [
                    nn.Conv2d(channels, width, kernel_size, padding=kernel_size // 2, bias=False),
                    nn.BatchNorm2d(width),
                    nn.ReLU(),
                ]
                channels = width
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.avgpool(self.features(x)), 1))
