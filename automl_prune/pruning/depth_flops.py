"""A differentiable FLOPs count of width gates plus ordered depth keeps, exact for hard ones.

Ordered depth (``relax``'s cumulative keeps κ_1 >= ... >= κ_n over blocks listed from the one dropped
last to the one dropped first) has only n + 1 hard configurations: the first k blocks kept, the others
removed. Each gets its own ``GatedFlops`` on a copy of the model with those blocks removed, and soft
keeps mix them: F = sum_k P(k) F_k(width gates), P(k) = κ_k - κ_{k+1} (κ_0 = 1, κ_{n+1} = 0), the
probability that exactly the first k blocks stay when block j stays with probability κ_j. For 0/1 keeps
one P(k) is 1, so F is the sliced model's fvcore count; F is linear in every κ_j, so each gets a
gradient.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import nn

from automl_prune.errors import ModelError
from automl_prune.model_io import Inputs
from automl_prune.pruning.depth import remove_blocks
from automl_prune.pruning.flops_model import GatedFlops
from automl_prune.pruning.graph import DependencyAnalysis, analyze


class OrderedDepthFlops:
    """FLOPs of ``model`` (fvcore convention, at ``example_input``) as a function of the channel gates of
    ``analysis`` and the keep values of ``blocks`` (skippable blocks, the one dropped last first).

    ``flops(width, depth)``: ``width`` is ``{key: gates}`` as for ``GatedFlops`` ((size,) or (B, size)),
    ``depth`` the (n,) or (B, n) non-increasing keeps; returns a float64 scalar or (B,) on ``depth``'s
    device. ``full`` is the dense count. Building costs one ``GatedFlops`` per configuration (n + 1 of
    them; the first, of the whole model, takes seconds, the others reuse its remainder slopes and take
    about three fvcore traces each): build once and reuse it.
    """

    def __init__(
        self, model: nn.Module, analysis: DependencyAnalysis, example_input: Inputs, blocks: Sequence[str]
    ) -> None:
        self.blocks = tuple(blocks)
        dense = GatedFlops(model, analysis, example_input)
        self.full = dense.full
        sizes = dict(zip(analysis.keys, analysis.sizes, strict=True))
        self._prefixes = [
            _without(model, example_input, self.blocks[k:], sizes, dense) for k in range(len(self.blocks))
        ]
        self._prefixes.append(dense)
        self._keys = [frozenset(f.analysis.keys) for f in self._prefixes]

    def __call__(self, width: dict[str, torch.Tensor], depth: torch.Tensor) -> torch.Tensor:
        keeps = depth.to("cpu", torch.float64)
        if keeps.shape[-1:] != (len(self.blocks),):
            raise ValueError(f"need {len(self.blocks)} depth keeps per row, got shape {tuple(depth.shape)}")
        if bool((keeps[..., 1:] > keeps[..., :-1] + 1e-6).any()):
            raise ValueError("depth keeps must not increase along the blocks (relax's ordered depth)")
        edges = (keeps.new_ones(*keeps.shape[:-1], 1), keeps, keeps.new_zeros(*keeps.shape[:-1], 1))
        bounded = torch.cat(edges, dim=-1)
        chances = bounded[..., :-1] - bounded[..., 1:]  # P(k), k = 0..n blocks kept
        width = {k: v.to("cpu", torch.float64) for k, v in width.items()}
        counts = [
            f({k: v for k, v in width.items() if k in keys})
            for f, keys in zip(self._prefixes, self._keys, strict=True)
        ]
        return (chances * torch.stack(counts, dim=-1)).sum(-1).to(depth.device)


def _without(
    model: nn.Module, example_input: Inputs, removed: Sequence[str], sizes: dict[str, int], hint: GatedFlops
) -> GatedFlops:
    """The FLOPs model of a copy of ``model`` with the blocks ``removed``, whose channel groups must be
    groups of the whole model (``sizes``: key -> size), so that one set of width gates drives both."""
    pruned = remove_blocks(copy.deepcopy(model), removed)
    analysis = analyze(pruned, example_input)
    changed = [g.key for g in analysis if sizes.get(g.key) != g.size]
    if changed:
        raise ModelError(
            f"removing the blocks {list(removed)} changes the channel groups {changed} (a new root or "
            "another size), so the width gates of the whole model do not describe the smaller one",
            "gate only blocks whose output has their input's shape (shape_preserving) and whose removal "
            "leaves the other groups as they were, e.g. a resnet block without a shortcut conv",
        )
    return GatedFlops(pruned, analysis, example_input, hint=hint)
