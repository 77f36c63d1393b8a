"""Composite pruned models: several pruned copies of one base model and the router that picks one.

A mixture of pruned experts (one UNet per interval of denoising timesteps, or one per architecture code
that prompts are routed to) is still one model to the core: :class:`CompositeModel` is called like its
parts, sends each batch element to the part its :class:`Router` picks, and puts the outputs back in batch
order. When every element goes to one part (a sampling step: the whole batch shares its timestep), that
part is called on the batch as it is, so a composite costs exactly its chosen part.

Routers (:mod:`.routers`) are small modules described by a JSON config (``to_config``/``from_config``)
and, for a learned router, a few tensors, so a saved composite is a manifest, the router's tensors and
one pruned model per part (:mod:`.persistence`); nothing is pickled.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from automl_prune.pruning.routers import ROUTERS, PromptRouter, Router, TimestepRouter, router_from_config

# The routers lived here first; callers still import them from this module.
__all__ = [
    "ROUTERS",
    "CompositeModel",
    "PromptRouter",
    "Router",
    "TimestepRouter",
    "groups",
    "router_from_config",
]


def _select(value: Any, index: torch.Tensor, batch: int) -> Any:
    """``value`` restricted to the batch elements ``index`` (tensors with the batch as first dim only)."""
    if isinstance(value, torch.Tensor) and value.dim() > 0 and len(value) == batch:
        return value[index]
    return value


def _stitch(outputs: list[Any], indices: list[torch.Tensor], batch: int) -> Any:
    """The parts' outputs merged back into batch order, in the structure of the first one."""
    first = outputs[0]
    if isinstance(first, torch.Tensor):
        merged = first.new_empty((batch, *first.shape[1:]))
        for out, index in zip(outputs, indices, strict=True):
            merged[index] = out
        return merged
    if hasattr(first, "to_tuple") and isinstance(first, Mapping):  # diffusers' BaseOutput
        return type(first)(**{k: _stitch([o[k] for o in outputs], indices, batch) for k in first})
    if isinstance(first, Mapping):
        return {k: _stitch([o[k] for o in outputs], indices, batch) for k in first}
    if isinstance(first, (tuple, list)):
        return type(first)(_stitch([o[i] for o in outputs], indices, batch) for i in range(len(first)))
    raise TypeError(f"cannot merge part outputs of type {type(first).__name__}")


def groups(choice: torch.Tensor) -> list[tuple[int, torch.Tensor]]:
    """Each part a router's ``choice`` (B,) uses, with the batch indices it serves, by part."""
    return [(part, torch.nonzero(choice == part).flatten()) for part in torch.unique(choice).tolist()]


class CompositeModel(nn.Module):
    """``parts`` (pruned models with one signature) behind ``router``; called like any one part."""

    def __init__(self, parts: Sequence[nn.Module], router: Router) -> None:
        super().__init__()
        if not parts:
            raise ValueError("a composite model needs at least one part")
        self.parts = nn.ModuleList(parts)
        self.router = router

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        choice = self.router(args, kwargs)
        used = groups(choice)
        if len(used) == 1:
            return self.parts[used[0][0]](*args, **kwargs)
        batch = len(choice)
        outputs = [
            self.parts[part](
                *(_select(a, index, batch) for a in args),
                **{k: _select(v, index, batch) for k, v in kwargs.items()},
            )
            for part, index in used
        ]
        return _stitch(outputs, [index for _, index in used], batch)
