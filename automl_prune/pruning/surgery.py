"""Physical pruning: a smaller deep copy of a model with the channels a keep mask drops removed.

All groups are removed in one pass. Each member records its channel indices in the *original* model
(a concatenation consumer's indices already carry the offset of its input), so removals are collected
per (module, side) first and applied once with torch-pruning's layer pruning functions. No index ever
has to be re-mapped after another group was pruned, which is where sequential pruning of concatenated
groups goes wrong.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from automl_prune.model_io import Inputs
from automl_prune.pruning.graph import ChannelGroup, DependencyAnalysis, analyze
from automl_prune.pruning.layers import follow_rules


def hard_keep(gate_values: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Keep masks of gate values: a channel stays when its gate is >= 0.5."""
    return {key: gate.detach() >= 0.5 for key, gate in gate_values.items()}


def slice_model(
    model: nn.Module,
    example_input: Inputs | None,
    keep: dict[str, torch.Tensor],
    analysis: DependencyAnalysis | None = None,
) -> nn.Module:
    """A deep copy of ``model`` without the channels whose ``keep`` entry is False.

    ``keep`` maps group keys to boolean masks in group channel order; groups left out stay whole. A
    group is never emptied: when a mask keeps nothing, its first unit stays. ``analysis`` (of ``model``
    or of a model with the same architecture) saves tracing ``model`` again.
    """
    analysis = analysis or analyze(model, example_input)
    unknown = set(keep) - set(analysis.keys)
    if unknown:
        raise KeyError(f"no channel groups {sorted(unknown)} in this model")
    removed: dict[tuple[str, str], list[int]] = {}
    for group in analysis:
        if group.key not in keep:
            continue
        dropped = set((~_mask(group, keep[group.key])).nonzero().flatten().tolist())
        for m in group.members:
            idxs = [i for i, c in zip(m.idxs, m.channels, strict=True) if c in dropped]
            removed.setdefault((m.module, m.side), []).extend(idxs)
    sliced = copy.deepcopy(model)
    modules = dict(sliced.named_modules())
    originals = dict(analysis.model.named_modules())
    for (name, side), idxs in removed.items():
        if not idxs:
            continue
        pruner = analysis.graph.get_pruner_of_module(modules[name])
        pruner.pruning_dim = analysis.graph.module2node[originals[name]].pruning_dim
        prune = pruner.prune_out_channels if side == "out" else pruner.prune_in_channels
        prune(modules[name], sorted(set(idxs)))
    _fix_group_norms(sliced, model)
    follow_rules(sliced, model)
    return sliced


def _mask(group: ChannelGroup, keep: torch.Tensor) -> torch.Tensor:
    keep = keep.detach().to("cpu", torch.bool)
    if keep.shape != (group.size,):
        raise ValueError(f"keep mask of group {group.key!r} must have shape ({group.size},)")
    units = keep.view(group.units, group.unit)
    if not (units.all(1) | ~units.any(1)).all():
        raise ValueError(
            f"keep mask of group {group.key!r} splits a unit of {group.unit} channels (a GroupNorm group)"
        )
    if not keep.any():
        keep = keep.clone()
        keep[: group.unit] = True
    return keep


def _fix_group_norms(sliced: nn.Module, original: nn.Module) -> None:
    """torch-pruning keeps ``num_groups``; whole groups were removed, so keep the channels per group."""
    before = dict(original.named_modules())
    for name, module in sliced.named_modules():
        if isinstance(module, nn.GroupNorm):
            per_group = before[name].num_channels // before[name].num_groups
            module.num_groups = module.num_channels // per_group
