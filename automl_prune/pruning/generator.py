"""An architecture generator: one network that proposes channel logits for every prunable group.

Fixed learnable per-layer tokens run through a bidirectional GRU, so each layer's decision sees the
whole network (how much was kept before and after it); a linear head per layer gives its logits.
An optional condition vector (e.g. another agent's gates) is projected and added to every token.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from automl_prune.pruning.graph import DependencyAnalysis
from automl_prune.pruning.gumbel import OFFSET, TEMPERATURE, deterministic_gates, gumbel_sigmoid

Logits = dict[str, torch.Tensor] | list[torch.Tensor]


class ArchitectureGenerator(nn.Module):
    """Channel logits for groups of ``group_sizes`` channels.

    With ``units``, a group gets size/unit logits, each repeated for the ``unit`` channels that must go
    together (GroupNorm groups). With ``keys``, outputs are dicts keyed like ``ChannelGates.set``
    expects; otherwise lists. ``condition_dim`` enables the conditioning input of ``forward``.
    """

    def __init__(
        self,
        group_sizes: Sequence[int],
        hidden: int = 64,
        *,
        units: Sequence[int] | None = None,
        keys: Sequence[str] | None = None,
        condition_dim: int | None = None,
    ) -> None:
        super().__init__()
        self.units = list(units) if units is not None else [1] * len(group_sizes)
        self.keys = list(keys) if keys is not None else None
        if any(size % unit for size, unit in zip(group_sizes, self.units, strict=True)):
            raise ValueError(f"group sizes {list(group_sizes)} are not multiples of units {self.units}")
        self.tokens = nn.Parameter(torch.randn(len(group_sizes), hidden) * 0.1)
        self.condition = nn.Linear(condition_dim, hidden) if condition_dim else None
        self.gru = nn.GRU(hidden, hidden, batch_first=True, bidirectional=True)
        self.norm = nn.LayerNorm(2 * hidden)
        self.heads = nn.ModuleList(
            nn.Linear(2 * hidden, size // unit) for size, unit in zip(group_sizes, self.units, strict=True)
        )

    @classmethod
    def from_analysis(cls, analysis: DependencyAnalysis, **kwargs: int) -> ArchitectureGenerator:
        """A generator for every group of ``analysis``, keyed by group key, respecting units."""
        return cls(analysis.sizes, units=analysis.units, keys=analysis.keys, **kwargs)

    def forward(self, condition: torch.Tensor | None = None) -> Logits:
        """Per-channel logits of every group."""
        return self._per_channel(self._unit_logits(condition), lambda z: z)

    def sample(
        self,
        condition: torch.Tensor | None = None,
        *,
        temperature: float = TEMPERATURE,
        offset: float = OFFSET,
        hard: bool = True,
        generator: torch.Generator | None = None,
    ) -> Logits:
        """Gumbel-sigmoid gates (hard 0/1 with straight-through gradients unless ``hard=False``)."""
        return self._per_channel(
            self._unit_logits(condition),
            lambda z: gumbel_sigmoid(z, temperature, offset, hard=hard, generator=generator),
        )

    def deterministic(self, condition: torch.Tensor | None = None, *, offset: float = OFFSET) -> Logits:
        """Noise-free hard gates 1[z + b >= 0]: the architecture the generator currently proposes."""
        return self._per_channel(self._unit_logits(condition), lambda z: deterministic_gates(z, offset))

    def _unit_logits(self, condition: torch.Tensor | None) -> list[torch.Tensor]:
        tokens = self.tokens
        if (condition is None) != (self.condition is None):
            raise ValueError("pass a condition exactly when the generator was built with condition_dim")
        if self.condition is not None:
            tokens = tokens + self.condition(condition)
        states, _ = self.gru(tokens.unsqueeze(0))
        states = torch.relu(self.norm(states[0]))
        return [head(state) for head, state in zip(self.heads, states, strict=True)]

    def _per_channel(self, logits: list[torch.Tensor], fn: Callable[[torch.Tensor], torch.Tensor]) -> Logits:
        """Apply ``fn`` per unit (so sampled noise is shared by a unit), then expand to channels."""
        out = [fn(z).repeat_interleave(unit) for z, unit in zip(logits, self.units, strict=True)]
        return dict(zip(self.keys, out, strict=True)) if self.keys is not None else out
