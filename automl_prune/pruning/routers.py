"""Routers of a :class:`~automl_prune.pruning.composite.CompositeModel`: which part serves each batch
element of a call.

A router is a small module described by a JSON config (``to_config``; rebuilt by
:func:`router_from_config`). A router with tensors (:class:`PromptRouter`'s learned heads and codes)
keeps them as buffers: the config gives their shapes and the saved composite holds their values
(:mod:`.persistence`), so nothing is pickled.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from itertools import pairwise
from typing import Any, ClassVar

import torch
from torch import nn

from automl_prune.errors import CheckpointError
from automl_prune.pruning.gumbel import OFFSET
from automl_prune.pruning.routing import assign, relax, routing_embedding, routing_similarity


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


class PromptRouter(Router):
    """APTP's inference routing: each prompt goes to the architecture code its predicted gates resemble.

    The prompt's embedding z is the mean of the call's ``encoder_hidden_states`` (the third positional
    argument or the keyword; (B, tokens, D)) over all token positions, padding included: the route is
    then a function of the UNet's input alone, with no attention mask to pass along. Linear heads give
    L gate logits (``weight`` (L, D), ``bias`` (L,)); the gates are their noise-free decision
    (:func:`~.routing.relax` with ``noise=False``: open iff logit + ``offset`` >= 0, cumulative along the
    ``depth`` slice); the part is the argmax over codes of the similarity between the gates' routing
    embedding (``unit_widths``: gates per entry) and the codes' (``code_embeddings`` (K, L)).
    """

    kind = "prompt-codes"

    def __init__(
        self,
        weight: torch.Tensor,
        bias: torch.Tensor,
        code_embeddings: torch.Tensor,
        unit_widths: torch.Tensor | Sequence[int],
        depth: slice,
        offset: float = OFFSET,
    ) -> None:
        super().__init__()
        length = len(weight)
        widths = torch.as_tensor(unit_widths, dtype=weight.dtype)
        if weight.dim() != 2 or bias.shape != (length,) or widths.shape != (length,):
            raise ValueError(
                f"need weight (L, D), bias (L,) and unit_widths (L,), got {tuple(weight.shape)}, "
                f"{tuple(bias.shape)} and {tuple(widths.shape)}"
            )
        if code_embeddings.dim() != 2 or code_embeddings.shape[1] != length:
            raise ValueError(f"need code embeddings (K, {length}), got {tuple(code_embeddings.shape)}")
        if not range(length)[depth] or depth.step not in (None, 1):
            raise ValueError(f"the depth part {depth} must be a contiguous slice of the {length} gates")
        self.register_buffer("weight", weight.detach().clone())
        self.register_buffer("bias", bias.detach().clone().to(weight.dtype))
        self.register_buffer("code_embeddings", code_embeddings.detach().clone().to(weight.dtype))
        self.register_buffer("unit_widths", widths.clone())
        self.depth = slice(*depth.indices(length)[:2])
        self.offset = float(offset)

    @property
    def n_parts(self) -> int:
        return len(self.code_embeddings)

    def parts_of(self, states: torch.Tensor) -> torch.Tensor:
        """The code (part) of each prompt's token states (B, tokens, D)."""
        z = states.to(self.weight).mean(dim=1)
        gates = relax(z @ self.weight.T + self.bias, [self.depth], offset=self.offset, hard=True, noise=False)
        embedding = routing_embedding(gates, self.unit_widths)
        return assign(routing_similarity(embedding, self.code_embeddings), balanced=False)

    def forward(self, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> torch.Tensor:
        return self.parts_of(
            kwargs["encoder_hidden_states"] if "encoder_hidden_states" in kwargs else args[2]
        )

    def to_config(self) -> dict[str, Any]:
        length, width = self.weight.shape
        return {
            "type": self.kind,
            "gates": length,
            "width": width,
            "codes": self.n_parts,
            "depth": [self.depth.start, self.depth.stop],
            "offset": self.offset,
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> PromptRouter:
        """Placeholder tensors of the recorded shapes; the saved values are loaded into them."""
        length, width, codes = (int(config[k]) for k in ("gates", "width", "codes"))
        return cls(
            torch.zeros(length, width),
            torch.zeros(length),
            torch.zeros(codes, length),
            torch.ones(length),
            slice(*config["depth"]),
            config["offset"],
        )


ROUTERS: dict[str, type[Router]] = {r.kind: r for r in (TimestepRouter, PromptRouter)}


def router_from_config(config: dict[str, Any]) -> Router:
    """The router a manifest describes (a router with tensors still needs their saved values)."""
    try:
        return ROUTERS[config["type"]].from_config(config)
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(
            f"cannot build the router {config!r}: {type(exc).__name__}: {exc}",
            f"known router types: {', '.join(ROUTERS)}; the manifest is damaged or from a newer automl_prune",
        ) from exc
