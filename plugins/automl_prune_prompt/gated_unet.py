"""The gated conditional UNet (methods/prompt.md, "Gated conditional UNet"): where each entry of an
architecture vector acts, soft while the router trains, hard when an expert is sliced.

An architecture vector has one entry per prunable unit of every channel group the toolbox's analysis
finds (``analyze``: GroupNorm groups of the resnet blocks, heads of self- and cross-attention, groups of
the feed-forward's inner dimension), in analysis order, then one entry per depth-gated block. Choices
the spec leaves open, made here:

- **Width gates** are the toolbox's ``ChannelGates``, which sit after a group's normalisation: in a
  resnet block after ``norm2``, just before its SiLU and ``conv2``. The spec puts them after the
  activation; for 0/1 gates the two are the same (SiLU(0) = 0, so a closed gate equals a removed
  channel and masked == sliced), and soft gates get the loss's gradient in both places.
- **Depth gates** sit on the last block of each stage that keeps its input's shape (a stage of a
  diffusers UNet: a down block, the mid block, an up block; ``stage_blocks``), as y = x + d (f(x) - x)
  (``BlockSkips.set_gates``). They form one ordered part, listed from the block dropped last to the one
  dropped first, so the router's cumulative relaxation drops the middle of the U first: the mid block,
  then the deepest down and up blocks, outwards (of a down/up pair at the same depth, the up block
  first). In diffusers' UNets the up stages have no such block: their resnets take the skip
  concatenation (more channels in than out), and their transformer blocks return a tuple; letting
  those be skipped was tried and re-rooted the channel groups of the next resnet's shortcut, so the
  width gates of the dense UNet would no longer describe the smaller one. Depth is therefore gated on
  the down stages and the mid block (t2i-unet-tiny: 4 blocks; Stable Diffusion 2.1: 5).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cached_property

import torch
from torch import nn

from automl_prune.api import Inputs
from automl_prune.pruning import (
    BlockSkips,
    ChannelGates,
    OrderedDepthFlops,
    analyze,
    remove_blocks,
    shape_preserving,
    slice_model,
    stage_blocks,
)


def depth_order(stages: list[list[str]], skippable: list[str]) -> list[str]:
    """The depth-gated blocks (each stage's last skippable block), from the one dropped last (the outer
    stages) to the one dropped first (the mid block), see the module doc."""
    downs = [s for s in stages if s and s[0].startswith("down_blocks")]
    ups = [s for s in stages if s and s[0].startswith("up_blocks")]
    mids = [s for s in stages if s and s[0].startswith("mid_block")]
    ordered: list[list[str]] = []
    for down, up in zip(downs, reversed(ups), strict=False):  # outermost pair first
        ordered += [down, up]
    ordered += mids
    last = [next((b for b in reversed(stage) if b in skippable), None) for stage in ordered]
    return [b for b in last if b is not None]


class GatedUNet:
    """Gates on ``unet`` (not copied, not changed outside :meth:`gated`), traced at ``example``."""

    def __init__(self, unet: nn.Module, example: Inputs) -> None:
        self.unet = unet
        self.example = example
        self.analysis = analyze(unet, example)
        stages = stage_blocks(unet)
        skippable = shape_preserving(unet, example, [b for stage in stages for b in stage])
        self.depth_blocks = depth_order(stages, skippable)
        self.width_units = [g.units for g in self.analysis]

    @property
    def head_sizes(self) -> list[int]:
        """Entries per part of an architecture vector: each channel group's units, then the depth part."""
        return [*self.width_units, len(self.depth_blocks)]

    @property
    def length(self) -> int:
        return sum(self.head_sizes)

    @property
    def depth_slice(self) -> slice:
        width = sum(self.width_units)
        return slice(width, width + len(self.depth_blocks))

    @property
    def unit_widths(self) -> torch.Tensor:
        """Channels per entry (a depth entry counts 1): the routing embedding's scale."""
        widths = [g.unit for g in self.analysis for _ in range(g.units)]
        return torch.tensor([*widths, *[1] * len(self.depth_blocks)])

    def split(self, vector: torch.Tensor) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """(per-group channel gates, per-block depth gates) of ``vector`` ((L,) or (batch, L))."""
        rows = vector.view(-1, self.length)
        parts = rows[:, : self.depth_slice.start].split(self.width_units, dim=1)
        width = {g.key: p.repeat_interleave(g.unit, dim=1) for g, p in zip(self.analysis, parts, strict=True)}
        depth = {b: rows[:, self.depth_slice.start + j] for j, b in enumerate(self.depth_blocks)}
        if vector.dim() == 1:
            width = {k: v[0] for k, v in width.items()}
            depth = {k: v[0] for k, v in depth.items()}
        return width, depth

    @contextmanager
    def gated(self, vector: torch.Tensor) -> Iterator[nn.Module]:
        """The UNet computing with ``vector``'s gates inside the block ((batch, L): one row per sample)."""
        width, depth = self.split(vector)
        with (
            ChannelGates(self.unet, self.analysis) as gates,
            BlockSkips(self.unet, self.depth_blocks) as skips,
        ):
            gates.set(width)
            skips.set_gates(depth)
            yield self.unet

    def extract(self, vector: torch.Tensor) -> nn.Module:
        """The expert of a hard (0/1) ``vector`` of length L: a sliced copy of the UNet with the closed
        depth blocks removed. Its weights are the UNet's as they are now (load the dense weights first)."""
        width, depth = self.split(vector.detach())
        keep = {k: v > 0.5 for k, v in width.items()}
        sliced = slice_model(self.unet, self.example, keep, self.analysis)
        return remove_blocks(sliced, [b for b, d in depth.items() if float(d) < 0.5])

    def flops(self, vector: torch.Tensor) -> torch.Tensor:
        """FLOPs of one UNet call at the example's batch for ``vector`` ((L,): a scalar; (batch, L): one
        per row), differentiable in width and depth entries and equal to ``extract``'s count when hard.
        The depth entries must not increase (as ``relax`` makes them)."""
        width, _ = self.split(vector)
        return self._flops(width, vector[..., self.depth_slice])

    @property
    def full_flops(self) -> int:
        """FLOPs of the dense UNet, same convention."""
        return self._flops.full

    @cached_property
    def _flops(self) -> OrderedDepthFlops:
        """Built on first use (one FLOPs model per depth configuration, seconds each), then reused by
        every gated UNet of the same architecture and example shapes in this process (the trials of a
        search): FLOPs depend on the layers and shapes, not on the weights."""
        shapes = [tuple(t.shape) for t in self.example]
        config = dict(getattr(self.unet, "config", {}))
        key = hashlib.sha256(repr((repr(self.unet), config, shapes, self.depth_blocks)).encode()).hexdigest()
        if key not in _FLOPS_MODELS:
            _FLOPS_MODELS[key] = OrderedDepthFlops(self.unet, self.analysis, self.example, self.depth_blocks)
        return _FLOPS_MODELS[key]


_FLOPS_MODELS: dict[str, OrderedDepthFlops] = {}
