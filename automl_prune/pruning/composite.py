"""Composite pruned models: several pruned copies of one base model and the router that picks one.

A mixture of pruned experts (one UNet per interval of denoising timesteps, later one per prompt
difficulty) is still one model to the core: :class:`CompositeModel` is called like its parts, sends each
batch element to the part its :class:`Router` picks, and puts the outputs back in batch order. When every
element goes to one part (a sampling step: the whole batch shares its timestep), that part is called on
the batch as it is, so a composite costs exactly its chosen part.

Routers are small modules described by a JSON config (``to_config``/``from_config``), so a saved composite
is a manifest plus one pruned model per part (:mod:`.persistence`); nothing is pickled.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from itertools import pairwise
from typing import Any, ClassVar

import torch
from torch import nn

from automl_prune.errors import CheckpointError


class Router(nn.Module):
    """Picks a part for every batch element of a call: ``forward(args, kwargs) -> (B,) long tensor``."""

    kind: ClassVar[str]

    def to_config(self) -> dict[str, Any]:
        raise NotImplementedError

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Router:
        raise NotImplementedError


class TimestepRouter(Router):
    """Part ``i`` serves the timesteps in ``[boundaries[i], boundaries[i + 1])``.

    The timestep is the call's ``timestep`` keyword or its second positional argument (diffusers' UNet
    signature ``(sample, timestep, ...)``); a scalar timestep serves the whole batch.
    """

    kind = "timestep-intervals"

    def __init__(self, boundaries: Sequence[int]) -> None:
        super().__init__()
        bounds = [int(b) for b in boundaries]
        if len(bounds) < 2 or any(a >= b for a, b in pairwise(bounds)):
            raise ValueError(f"boundaries must be at least two increasing timesteps, got {bounds}")
        self.boundaries = bounds

    @property
    def n_parts(self) -> int:
        return len(self.boundaries) - 1

    def parts_of(self, timesteps: torch.Tensor) -> torch.Tensor:
        """The part serving each timestep (timesteps outside the boundaries go to the nearest end part)."""
        inner = torch.tensor(self.boundaries[1:-1], device=timesteps.device)
        return torch.bucketize(timesteps.long(), inner, right=True)

    def forward(self, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> torch.Tensor:
        timestep = kwargs["timestep"] if "timestep" in kwargs else args[1]
        timestep = torch.as_tensor(timestep)
        batch = len(args[0]) if args else len(next(iter(kwargs.values())))
        return self.parts_of(timestep.reshape(-1).expand(batch) if timestep.numel() == 1 else timestep)

    def to_config(self) -> dict[str, Any]:
        return {"type": self.kind, "boundaries": list(self.boundaries)}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> TimestepRouter:
        return cls(config["boundaries"])


ROUTERS: dict[str, type[Router]] = {TimestepRouter.kind: TimestepRouter}


def router_from_config(config: dict[str, Any]) -> Router:
    """The router a manifest describes."""
    try:
        return ROUTERS[config["type"]].from_config(config)
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(
            f"cannot build the router {config!r}: {type(exc).__name__}: {exc}",
            f"known router types: {', '.join(ROUTERS)}; the manifest is damaged or from a newer automl_prune",
        ) from exc


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
        used = torch.unique(choice).tolist()
        if len(used) == 1:
            return self.parts[used[0]](*args, **kwargs)
        batch = len(choice)
        indices = [torch.nonzero(choice == part).flatten() for part in used]
        outputs = [
            self.parts[part](
                *(_select(a, index, batch) for a in args),
                **{k: _select(v, index, batch) for k, v in kwargs.items()},
            )
            for part, index in zip(used, indices, strict=True)
        ]
        return _stitch(outputs, indices, batch)
