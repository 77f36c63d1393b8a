"""The size predictor, the kernel predictor, and the searchable network that ties them to a CNN.

Size predictor: the toolbox's ``ArchitectureGenerator`` with one output per layer (fixed learnable
per-layer tokens -> bidirectional GRU -> a head per layer), squashed to ``v_l`` in (0, 1); soft size
``s_l = 1 + (K_max - 1) v_l``, hard size the nearest odd integer. The heads start at the base model's
sizes (plus half a step, so the initial hard sizes are the base's).

Kernel predictor (the design choice the method leaves open): each layer keeps learnable K_max x K_max
weights (initialised from the base model), modulated by per-ring gains from one small MLP shared by
all layers. Its input is the layer's soft size (detached, so sizes learn only through the mask, as the
method says) and its relative depth; its output, ``exp`` of a zero-initialised linear layer, starts
every gain at 1. The gains let a layer rescale its inner rings when its support grows or shrinks
instead of relearning every weight. At initialisation the base weights are divided by the initial
mask, so the searchable network computes exactly what the base model computes.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from automl_prune.pruning import ArchitectureGenerator
from automl_prune_kernel_size.convert import searchable_layers, to_plain, to_searchable
from automl_prune_kernel_size.layers import SizeSearchConv, nearest_odd, ring_map, soft_mask

START_MARGIN = 0.5  # initial soft sizes sit this far above the base sizes (same hard size)


class SizePredictor(nn.Module):
    """Soft kernel sizes in [1, k_max] for ``len(initial)`` layers, starting near ``initial``."""

    def __init__(self, initial: list[int], k_max: int, hidden: int = 32) -> None:
        super().__init__()
        self.k_max = k_max
        self.generator = ArchitectureGenerator([1] * len(initial), hidden=hidden)
        with torch.no_grad():
            for head, size in zip(self.generator.heads, initial, strict=True):
                v = min(max((size + START_MARGIN - 1) / (k_max - 1), 0.02), 0.98)
                head.weight.mul_(0.1)
                head.bias.fill_(math.log(v / (1 - v)))

    def forward(self) -> torch.Tensor:
        v = torch.sigmoid(torch.cat(self.generator()))
        return 1 + (self.k_max - 1) * v


class RingGains(nn.Module):
    """Per-ring weight gains of every layer from (soft size / k_max, relative depth): all 1 at start."""

    def __init__(self, layers: int, k_max: int, hidden: int = 16) -> None:
        super().__init__()
        self.k_max = k_max
        self.register_buffer("depth", torch.linspace(0, 1, layers))
        self.mlp = nn.Sequential(nn.Linear(2, hidden), nn.Tanh(), nn.Linear(hidden, k_max // 2 + 1))
        nn.init.zeros_(self.mlp[-1].weight)
        nn.init.zeros_(self.mlp[-1].bias)

    def forward(self, sizes: torch.Tensor) -> torch.Tensor:
        code = torch.stack([sizes.detach() / self.k_max, self.depth], dim=1)
        return torch.exp(self.mlp(code))


class SearchableCNN(nn.Module):
    """``model`` with learnable kernel sizes. ``forward(x)`` predicts sizes and weights, then runs it.

    ``fix(sizes)`` pins the hard sizes (after a budget repair), ``hard`` drops the soft mask, and
    ``build()`` returns the plain CNN at the current hard sizes with centre-cropped effective weights.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        k_max: int,
        sharpness: float,
        modulation: bool = True,
        hidden: int = 32,
    ) -> None:
        super().__init__()
        if k_max < 3 or k_max % 2 == 0:
            raise ValueError(f"k_max must be an odd integer >= 3, got {k_max}")
        self.layers = searchable_layers(model)
        self.net = to_searchable(model, self.layers, k_max, sharpness)
        self.k_max = k_max
        self.predictor = SizePredictor([conv.base_size for conv in self.convs], k_max, hidden)
        self.kernels = RingGains(len(self.layers), k_max) if modulation else None
        self._match_base()

    @property
    def convs(self) -> list[SizeSearchConv]:
        return [self.net.get_submodule(name) for name in self.layers]

    def _match_base(self) -> None:
        """Divide the base weights by the initial mask and gains, so forward starts equal to the base."""
        with torch.no_grad():
            sizes = self.predictor()
            gains = self._gains(sizes)
            for i, conv in enumerate(self.convs):
                k = nearest_odd(sizes[i], self.k_max)
                start = (self.k_max - k) // 2
                scale = soft_mask(sizes[i], k, conv.sharpness)
                if gains is not None:
                    scale = scale * ring_map(gains[i], k)
                conv.weight[..., start : start + k, start : start + k] /= scale

    def _gains(self, sizes: torch.Tensor) -> torch.Tensor | None:
        return self.kernels(sizes) if self.kernels is not None else None

    def soft_sizes(self) -> torch.Tensor:
        return self.predictor()

    def hard_sizes(self) -> dict[str, int]:
        """The sizes the next forward uses: pinned ones, else the rounded soft sizes."""
        self._set(self.soft_sizes().detach())
        return {name: conv.kernel_size_now() for name, conv in zip(self.layers, self.convs, strict=True)}

    def fix(self, sizes: dict[str, int] | None) -> None:
        """Pin hard sizes (``None`` unpins); the soft mask still follows the predicted sizes."""
        for name, conv in zip(self.layers, self.convs, strict=True):
            conv.fixed = None if sizes is None else int(sizes[name])

    @property
    def hard(self) -> bool:
        return self.convs[0].hard

    @hard.setter
    def hard(self, value: bool) -> None:
        for conv in self.convs:
            conv.hard = value

    def _set(self, sizes: torch.Tensor) -> None:
        gains = self._gains(sizes)
        for i, conv in enumerate(self.convs):
            conv.size = sizes[i]
            conv.gains = gains[i] if gains is not None else None

    def forward(self, x: torch.Tensor, sizes: torch.Tensor | None = None) -> torch.Tensor:
        """Run the network at ``sizes`` (default: the predictor's current soft sizes)."""
        self._set(self.soft_sizes() if sizes is None else sizes)
        return self.net(x)

    def build(self) -> nn.Module:
        """The plain CNN at the current hard sizes; equal to this network's forward."""
        with torch.no_grad():
            self._set(self.soft_sizes())
        return to_plain(self.net)

    def weight_parameters(self) -> list[nn.Parameter]:
        """What the weight optimiser trains: the network's and the kernel predictor's parameters."""
        params = list(self.net.parameters())
        return params + (list(self.kernels.parameters()) if self.kernels is not None else [])
