"""Selectors: decode the classifier's own tap features, conditioned on a class, into a saliency mask.

Both selectors share :class:`ConditionedDecoder` (class gating of the deepest features, then a small
U-Net-like path up to the shallowest tap) and differ only in their head: :class:`RBFSelector` reduces the
decoded map to three RBF parameters per image (ISP), :class:`PixelSelector` keeps one logit per pixel
(the REAL-X-style ablation). Each keeps its constructor arguments in ``init_args`` so an explainer can
be stored as plain tensors and rebuilt.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from automl_prune_interpretation.rbf import Size, activate, rbf_mask


def conv_bn_relu(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class ResidualBlock(nn.Module):
    """conv-BN-ReLU-conv-BN plus a 1x1 projection of the input (the skip concatenation widens it)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            conv_bn_relu(in_channels, out_channels),
            nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels),
        )
        self.project = nn.Conv2d(in_channels, out_channels, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.body(x) + self.project(x))


class UpStage(nn.Module):
    """conv-BN-ReLU to 4x the channels, PixelShuffle x2, concatenate the shallower tap, residual block."""

    def __init__(self, hidden: int, skip_channels: int) -> None:
        super().__init__()
        self.up = nn.Sequential(conv_bn_relu(hidden, 4 * hidden), nn.PixelShuffle(2))
        self.merge = ResidualBlock(hidden + skip_channels, hidden)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        x = self.up(x)
        if x.shape[-2:] != skip.shape[-2:]:  # odd sizes, or taps more than 2x apart
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
        return self.merge(torch.cat([x, skip], dim=1))


class ConditionedDecoder(nn.Module):
    """Tap features (shallow -> deep) and labels -> a ``hidden``-channel map at the shallowest tap's size.

    The label's embedding (one vector of the deepest tap's width per class) gates the deepest features
    at each position by sigmoid(<feature, embedding> / sqrt(C)): the selector explains one class, so
    positions whose features speak for it pass and the others fade before decoding.
    """

    def __init__(self, tap_channels: list[int], num_classes: int, hidden: int) -> None:
        super().__init__()
        deepest = tap_channels[-1]
        self.embed = nn.Embedding(num_classes, deepest)
        self.stem = conv_bn_relu(deepest, hidden)
        self.ups = nn.ModuleList(UpStage(hidden, c) for c in reversed(tap_channels[:-1]))

    def forward(self, features: list[torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
        deep = features[-1]
        affinity = (deep * self.embed(labels)[:, :, None, None]).sum(dim=1, keepdim=True)
        x = self.stem(deep * torch.sigmoid(affinity / math.sqrt(deep.shape[1])))
        for up, skip in zip(self.ups, reversed(features[:-1]), strict=True):
            x = up(x, skip)
        return x


class _Selector(nn.Module):
    """The shared body: the decoder and a 1x1 conv head with ``outputs`` channels on its map."""

    def __init__(self, tap_channels: list[int], num_classes: int, hidden: int, outputs: int) -> None:
        super().__init__()
        self.init_args: dict[str, Any] = {
            "tap_channels": list(tap_channels),
            "num_classes": num_classes,
            "hidden": hidden,
        }
        self.decoder = ConditionedDecoder(tap_channels, num_classes, hidden)
        self.head = nn.Conv2d(hidden, outputs, 1)


class RBFSelector(_Selector):
    """ISP's selector: raw RBF parameters ``[N, 3]`` = ``(p_y, p_x, p_s)`` (see ``rbf``) per image.

    The head (1x1 conv to 3 channels, global average) starts at zero, which ``rbf.activate`` maps to a
    centred mask of width H/4: training starts from a neutral guess, not a random one.
    """

    def __init__(self, tap_channels: list[int], num_classes: int, hidden: int = 32) -> None:
        super().__init__(tap_channels, num_classes, hidden, outputs=3)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, features: list[torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
        return self.head(self.decoder(features, labels)).mean(dim=(2, 3))

    def masks(self, raw: torch.Tensor, size: Size) -> torch.Tensor:
        return rbf_mask(*activate(raw, size), size)


class PixelSelector(_Selector):
    """The REAL-X-style ablation: one mask logit per pixel, ``[N, 1, H, W]`` at ``image_size``.

    ``image_size`` None leaves the logits at the shallowest tap's size (the input's, for CIFAR ResNets).
    """

    def __init__(
        self, tap_channels: list[int], num_classes: int, hidden: int = 32, image_size: Size | None = None
    ) -> None:
        super().__init__(tap_channels, num_classes, hidden, outputs=1)
        self.image_size = tuple(image_size) if image_size else None
        self.init_args["image_size"] = list(image_size) if image_size else None

    def forward(self, features: list[torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
        logits = self.head(self.decoder(features, labels))
        return _resized(logits, self.image_size or logits.shape[-2:])

    def masks(self, logits: torch.Tensor, size: Size) -> torch.Tensor:
        return torch.sigmoid(_resized(logits, size))


def _resized(maps: torch.Tensor, size: Size | torch.Size) -> torch.Tensor:
    if maps.shape[-2:] == tuple(size):
        return maps
    return F.interpolate(maps, size=tuple(size), mode="bilinear", align_corners=False)


SELECTORS: dict[str, type[nn.Module]] = {"rbf": RBFSelector, "pixel": PixelSelector}


def make_selector(kind: str, tap_channels: list[int], num_classes: int, image_size: Size) -> nn.Module:
    """A fresh selector of ``kind`` ("rbf" or "pixel") for taps of these widths and images of this size."""
    if kind == "rbf":
        return RBFSelector(tap_channels, num_classes)
    if kind == "pixel":
        return PixelSelector(tap_channels, num_classes, image_size=image_size)
    raise ValueError(f"selector kind must be one of {sorted(SELECTORS)}, got {kind!r}")
