"""Elastic depth: blocks skipped as identities, live in a model (hooks) or for good (``SkippedBlock``).

A block can be skipped only where its output has its input's shape (a resnet block without a channel or
resolution change, an attention block with its residual inside): then returning the input is a valid
forward and the parent's code (diffusers' down/up blocks) needs no change. ``BlockSkips`` does that with
forward hooks, so a supernet keeps its module names and weights while configurations switch; an extracted
model replaces each skipped block by a ``SkippedBlock``, which holds no tensors and which persistence
rebuilds by name, so the saved model needs no weights of the removed block.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from functools import partial
from types import TracebackType
from typing import Any

import torch
from torch import nn

from automl_prune.model_io import Inputs, call

STAGES = ("down_blocks", "mid_block", "up_blocks")  # a diffusers UNet's stages, in forward order


class SkippedBlock(nn.Module):
    """Stands where a removed block was: returns its first input and ignores the other arguments (a
    resnet block's time embedding), so the parent module calls it as it called the block."""

    def forward(self, hidden: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        return hidden


def shape_preserving(model: nn.Module, example_input: Inputs, names: Iterable[str]) -> list[str]:
    """Those of the modules ``names`` whose output on ``example_input`` is one tensor shaped like their
    first input: the blocks that can be skipped as identities (in ``names``' order)."""
    names = list(names)
    modules = dict(model.named_modules())
    same: dict[str, bool] = {}

    def record(name: str, module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
        first = args[0] if args else None
        same[name] = isinstance(output, torch.Tensor) and isinstance(first, torch.Tensor)
        same[name] = same[name] and output.shape == first.shape

    handles = [modules[name].register_forward_hook(partial(record, name)) for name in names]
    try:
        with torch.no_grad():
            call(model, example_input)
    finally:
        for handle in handles:
            handle.remove()
    return [name for name in names if same.get(name, False)]


class BlockSkips:
    """Forward hooks on ``model``'s blocks ``names``: ``set(skipped)`` makes those of them return their
    input (the block still runs, its result is dropped, so no gradient reaches its weights);
    ``set_gates({name: d})`` makes a block return ``x + d * (f(x) - x)`` instead, a soft depth gate
    (d = 1: the block, d = 0: skipped, exactly) through which a learned d gets the task loss's gradient.
    Each call replaces what the other set. ``remove()`` (or leaving the ``with`` block) detaches the
    hooks."""

    def __init__(self, model: nn.Module, names: Iterable[str]) -> None:
        self.names = tuple(names)
        self._skipped: frozenset[str] = frozenset()
        self._gates: dict[str, torch.Tensor] = {}
        modules = dict(model.named_modules())
        self._handles = [
            modules[name].register_forward_hook(partial(self._skip, name)) for name in self.names
        ]

    @property
    def skipped(self) -> frozenset[str]:
        return self._skipped

    def set(self, skipped: Iterable[str]) -> None:
        skipped = frozenset(skipped)
        self._check(skipped)
        self._skipped, self._gates = skipped, {}

    def set_gates(self, gates: Mapping[str, torch.Tensor]) -> None:
        """Soft keep-values per block (scalars, or one per batch element); blocks left out run whole."""
        self._check(gates)
        self._skipped, self._gates = frozenset(), dict(gates)

    def _check(self, names: Iterable[str]) -> None:
        unknown = set(names) - set(self.names)
        if unknown:
            raise KeyError(f"blocks {sorted(unknown)} are not among the skippable blocks")

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def __deepcopy__(self, memo: dict[int, object]) -> BlockSkips:
        """As with ``ChannelGates``: a copy of a hooked model would skip blocks no config asked for."""
        raise RuntimeError("remove the BlockSkips (leave their `with` block) before copying the model")

    def __enter__(self) -> BlockSkips:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.remove()

    def _skip(self, name: str, module: nn.Module, args: tuple[Any, ...], output: Any) -> Any:
        if name in self._gates:
            x, d = args[0], self._gates[name]
            d = d.view(-1, *[1] * (x.dim() - 1)) if d.dim() == 1 else d
            return x + d.to(x.dtype) * (output - x)
        return args[0] if name in self._skipped else None


def remove_blocks(model: nn.Module, names: Iterable[str]) -> nn.Module:
    """``model`` with the blocks ``names`` replaced by :class:`SkippedBlock` (in place; returned)."""
    for name in names:
        model.set_submodule(name, SkippedBlock())
    return model


def unet_stages(unet: nn.Module) -> list[tuple[str, nn.Module]]:
    """The stages of a diffusers UNet in forward order, named: each down block, the mid block, each up
    block."""
    named: list[tuple[str, nn.Module]] = []
    for prefix in STAGES:
        part = getattr(unet, prefix, None)
        if isinstance(part, nn.ModuleList):
            named += [(f"{prefix}.{i}", stage) for i, stage in enumerate(part)]
        elif part is not None:
            named.append((prefix, part))
    return named


def stage_blocks(unet: nn.Module) -> list[list[str]]:
    """Per stage of a diffusers UNet (:func:`unet_stages`), the names of its resnet and attention blocks
    in the order its forward runs them (a mid block runs resnet 0, then attention i and resnet i + 1):
    the candidates for elastic depth."""
    stages = []
    for name, stage in unet_stages(unet):
        resnets = [f"{name}.resnets.{j}" for j in range(len(stage.resnets))]
        attentions = [
            f"{name}.attentions.{j}" if a is not None else None
            for j, a in enumerate(getattr(stage, "attentions", None) or [])
        ]
        if name == "mid_block":
            order = [resnets[0], *(b for pair in zip(attentions, resnets[1:], strict=True) for b in pair)]
        else:
            order = [b for j, r in enumerate(resnets) for b in (r, *attentions[j : j + 1])]
        stages.append([b for b in order if b is not None])
    return stages
