"""CIFAR-style ResNets (He et al. 2016, section 4.2): 3 stages of n BasicBlocks, widths w, 2w, 4w.

Downsampling blocks use option B shortcuts (1x1 conv + BN). Option A (strided identity padded with
zero channels) is not used: its zero padding ties channel positions to a fixed layout that cannot be
pruned physically, while a 1x1 conv shortcut is an ordinary prunable layer.
"""

from __future__ import annotations

import torch
from torch import nn


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers plus a shortcut; the shortcut is a 1x1 conv + BN when the shape changes."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=False), nn.BatchNorm2d(out_channels)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """Stem conv, three stages of ``blocks`` BasicBlocks, global average pool, linear classifier ``fc``."""

    def __init__(self, blocks: int, num_classes: int = 10, in_channels: int = 3, width: int = 16) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, width, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU()
        stages = []
        channels = width
        for i, stride in enumerate((1, 2, 2)):
            out = width * 2**i
            stage = [BasicBlock(channels, out, stride)]
            stage += [BasicBlock(out, out) for _ in range(blocks - 1)]
            stages.append(nn.Sequential(*stage))
            channels = out
        self.layer1, self.layer2, self.layer3 = stages
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, num_classes)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        nn.init.zeros_(self.fc.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def cifar_resnet(depth: int, num_classes: int = 10, in_channels: int = 3, width: int = 16) -> CifarResNet:
    """ResNet-``depth`` for small images; ``depth`` must be 6n+2 (20, 32, 44, 56, 110)."""
    if depth < 8 or (depth - 2) % 6:
        raise ValueError(f"CIFAR ResNet depth must be 6n+2 (20, 32, 56, ...), got {depth}")
    return CifarResNet((depth - 2) // 6, num_classes=num_classes, in_channels=in_channels, width=width)


def resnet20(**kwargs: int) -> CifarResNet:
    return cifar_resnet(20, **kwargs)


def resnet56(**kwargs: int) -> CifarResNet:
    return cifar_resnet(56, **kwargs)
