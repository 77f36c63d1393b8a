"""Map an explainer's tap features of a *pruned* model back to the original model's channel layout.

The selector's decoder was trained on the original model's tap features (e.g. the output of each CIFAR
ResNet stage), so it expects their channel counts. A pruned model whose keep masks are known (ISP's,
or a magnitude baseline's ``spec["keep"]``) is explained by scattering each tap's features into zeros
at the kept channel positions: exactly what the masked original computes there, since a gated channel
is zero downstream of its gate.

Which group carries a tap's channels, and in which order, is found by probing the original model with
:class:`~automl_prune.pruning.ChannelGates` on a real input, so it needs no knowledge of the
architecture: a group *carries* the tap when closing the whole group zeros the tap's output (a
residual stream: every writer of the stream is gated); closing one channel of that group then zeros
exactly one tap channel, which gives the channel map. Tap channels that are zero even in the full model
(dead units) cannot be probed; they take the group channels left over, in order. A tap that no group
carries (the input, or layers that are never pruned) keeps all its channels.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from automl_prune.pruning import ChannelGates, DependencyAnalysis
from automl_prune_interpretation.taps import Taps


@dataclass(frozen=True)
class TapGroup:
    """Tap ``tap`` carries group ``key``: group channel ``k`` is tap channel ``channels[k]``."""

    tap: str
    key: str
    channels: tuple[int, ...]


def _channel_peaks(t: torch.Tensor) -> torch.Tensor:
    """max |value| per channel (dim 1) over batch and space."""
    return t.detach().abs().transpose(0, 1).flatten(1).amax(1)


@torch.no_grad()
def tap_groups(
    model: nn.Module, analysis: DependencyAnalysis, taps: Sequence[str], x: torch.Tensor
) -> dict[str, TapGroup | None]:
    """For each tap (a module name of ``model``, the analysed model), the group carrying its channels.

    ``x`` is a real input batch (a few images). One forward per group of a tap's width, plus one per
    channel of each group whose closing zeros a tap. Closing group channel ``k`` always zeros the tap
    channel it carries; a ReLU may zero another one by coincidence, so each tap channel's candidates
    (the ``k`` that zero it) are resolved like a puzzle: a channel with one candidate takes it, which
    removes it from the others, until nothing changes. A group is accepted only if every live tap
    channel has a candidate (so a bias-free conv fed by a closed group, zeroed too but not gated
    itself, is not mistaken for a carrier); channels still ambiguous take the leftovers in order.
    """
    was_training = model.training
    model.eval()
    try:
        # gates first, so the taps see gated outputs (as an explainer hooked on a gated model does)
        with ChannelGates(model, analysis) as gates, Taps(model, list(taps)) as tapped:

            def peaks() -> dict[str, torch.Tensor]:
                model(x)
                return {t: _channel_peaks(o) for t, o in zip(taps, tapped.outputs, strict=True)}

            def zeroed(gate: torch.Tensor, key: str, pending: list[str]) -> dict[str, torch.Tensor]:
                gates.set({key: gate})
                seen = peaks()
                return {t: seen[t] == 0 for t in pending}

            live = {t: p > 0 for t, p in peaks().items()}
            out: dict[str, TapGroup | None] = {t: None for t in taps}
            for group in analysis:
                pending = [t for t in taps if out[t] is None and len(live[t]) == group.size]
                if not pending:
                    continue
                closed = zeroed(torch.zeros(group.size), group.key, pending)
                carried = [t for t in pending if closed[t].all()]
                if not carried:
                    continue
                hits = {t: torch.zeros(group.size, group.size, dtype=torch.bool) for t in carried}
                for k in range(group.size):
                    gate = torch.ones(group.size)
                    gate[k] = 0
                    for t, z in zeroed(gate, group.key, carried).items():
                        hits[t][k] = z & live[t]  # hits[t][k, c]: closing k zeros live tap channel c
                for t in carried:
                    found = _resolve(hits[t], live[t])
                    if found is not None:
                        out[t] = TapGroup(t, group.key, found)
            return out
    finally:
        model.train(was_training)


def _resolve(hits: torch.Tensor, live: torch.Tensor) -> tuple[int, ...] | None:
    """A bijection group channel -> tap channel from ``hits[k, c]`` (closing k zeros c), or None when a
    live tap channel is zeroed by no group channel."""
    size = len(live)
    candidates = {c: set(hits[:, c].nonzero().flatten().tolist()) for c in range(size) if live[c]}
    if any(not ks for ks in candidates.values()):
        return None
    found: dict[int, int] = {}  # group channel -> tap channel
    changed = True
    while changed:
        changed = False
        for c, ks in list(candidates.items()):
            ks -= set(found)
            if len(ks) == 1:
                found[ks.pop()] = c
                del candidates[c]
                changed = True
    free = iter(c for c in range(size) if c not in set(found.values()))
    return tuple(found[k] if k in found else next(free) for k in range(size))


def as_masks(
    keep: Mapping[str, torch.Tensor | Sequence[int]], analysis: DependencyAnalysis
) -> dict[str, torch.Tensor]:
    """Keep masks from boolean masks or kept-index lists (a pruned model's ``spec["keep"]``)."""
    out = {}
    for key, value in keep.items():
        t = torch.as_tensor(value)
        if t.dtype == torch.bool and t.numel() == analysis[key].size:
            out[key] = t.cpu()
        else:
            mask = torch.zeros(analysis[key].size, dtype=torch.bool)
            mask[t.long().cpu()] = True
            out[key] = mask
    return out


def kept_positions(
    groups: Mapping[str, TapGroup | None],
    keep: Mapping[str, torch.Tensor | Sequence[int]],
    analysis: DependencyAnalysis,
) -> dict[str, torch.Tensor | None]:
    """Per tap, the original tap channels the pruned model still has, ascending (its channel order);
    None where the tap keeps all channels."""
    masks = as_masks(keep, analysis)
    out: dict[str, torch.Tensor | None] = {}
    for tap, group in groups.items():
        if group is None or group.key not in masks:
            out[tap] = None
            continue
        channels = torch.tensor(group.channels)
        out[tap] = channels[masks[group.key]].sort().values
    return out


def scatter_channels(features: torch.Tensor, positions: torch.Tensor | None, channels: int) -> torch.Tensor:
    """``features`` [N, c, ...] placed at channel ``positions`` of zeros [N, channels, ...]."""
    if positions is None:
        return features
    if features.shape[1] != len(positions):
        raise ValueError(
            f"a pruned tap has {features.shape[1]} channels but its keep mask keeps {len(positions)}"
        )
    full = features.new_zeros(features.shape[0], channels, *features.shape[2:])
    return full.index_copy(1, positions.to(features.device), features)


def groups_to_artifacts(groups: dict[str, TapGroup | None]) -> dict[str, Any]:
    return {
        t: ({"key": g.key, "channels": torch.tensor(g.channels)} if g is not None else {"key": ""})
        for t, g in groups.items()
    }


def groups_from_artifacts(stored: dict[str, Any]) -> dict[str, TapGroup | None]:
    return {
        t: TapGroup(t, g["key"], tuple(int(c) for c in g["channels"])) if g["key"] else None
        for t, g in stored.items()
    }
