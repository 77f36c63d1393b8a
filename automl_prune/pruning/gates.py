"""Channel gates: forward hooks that multiply each group's channels by a gate vector.

Gates sit after the normalisation that follows a conv (see ``graph.ChannelGroup.gate_points``), so a
closed gate makes the channel exactly zero downstream, the same as removing it: with ReLU-like
activations (f(0) = 0) a masked model computes what the sliced model computes. Soft gates in [0, 1]
keep the output differentiable in the gate values, which is how an architecture generator learns.
"""

from __future__ import annotations

from functools import partial
from types import TracebackType

import torch
from torch import nn

from automl_prune.pruning.graph import DependencyAnalysis

CHANNELS_LAST = (nn.Linear, nn.LayerNorm)


class ChannelGates:
    """Gates on ``model`` (the analysed model or a deep copy of it) for the groups of ``analysis``.

    ``set({key: gate})`` replaces all gate vectors (length ``group.size``, in group channel order);
    groups left out are open. ``remove()`` (or leaving the ``with`` block) detaches the hooks.
    """

    def __init__(self, model: nn.Module, analysis: DependencyAnalysis) -> None:
        self.analysis = analysis
        self._values: dict[str, torch.Tensor] = {}
        sites: dict[str, list[tuple[str, torch.Tensor, torch.Tensor]]] = {}
        for group in analysis:
            for point in group.gate_points:
                site = (group.key, torch.tensor(point.idxs), torch.tensor(point.channels))
                sites.setdefault(point.module, []).append(site)
        modules = dict(model.named_modules())
        self._handles = [
            modules[name].register_forward_hook(partial(self._gate, at)) for name, at in sites.items()
        ]

    def set(self, values: dict[str, torch.Tensor]) -> None:
        """Gates per group: shape ``(size,)`` for the whole batch, or ``(batch, size)``, one row per sample
        (a router that gives each prompt its own architecture)."""
        for key, gate in values.items():
            size = self.analysis[key].size
            if gate.dim() not in (1, 2) or gate.shape[-1] != size:
                raise ValueError(
                    f"gate of group {key!r} must have shape ({size},) or (batch, {size}), "
                    f"got {tuple(gate.shape)}"
                )
        self._values = dict(values)

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def __deepcopy__(self, memo: dict[int, object]) -> ChannelGates:
        """A deep copy of a gated model (``slice_model`` makes one) would carry hooks sized for the
        original widths; refuse it instead of failing later with a shape error."""
        raise RuntimeError(
            "remove the ChannelGates (leave their `with` block) before copying or slicing the model"
        )

    def __enter__(self) -> ChannelGates:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.remove()

    def _gate(
        self,
        sites: list[tuple[str, torch.Tensor, torch.Tensor]],
        module: nn.Module,
        inputs: tuple[torch.Tensor, ...],
        output: torch.Tensor,
    ) -> torch.Tensor | None:
        active = [site for site in sites if site[0] in self._values]
        if not active:
            return None
        dim = -1 if isinstance(module, CHANNELS_LAST) else 1
        rows = output.shape[0] if any(self._values[key].dim() == 2 for key, _, _ in active) else 1
        scale = output.new_ones(rows, output.shape[dim])
        for key, idxs, channels in active:
            gate = self._values[key].to(scale).view(-1, self.analysis[key].size).expand(rows, -1)
            scale = scale.index_copy(1, idxs.to(scale.device), gate[:, channels.to(scale.device)])
        shape = [rows] + [1] * (output.dim() - 1)
        shape[dim] = -1
        return output * scale.view(shape)
