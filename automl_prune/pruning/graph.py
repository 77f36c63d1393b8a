"""Which channels must be pruned together: torch-pruning's dependency graph, named and ordered.

torch-pruning traces the model and couples every layer whose channels are tied (residual adds,
concatenations, depthwise convs, norms). This module turns its groups into plain records keyed by
module names, so gates, the FLOPs model, surgery and persistence can work on deep copies of the model
and agree on which channel is which.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import torch
from torch import nn

from automl_prune.errors import ModelError
from automl_prune.model_io import Inputs, output_tensors
from automl_prune.pruning.layers import Unit, forced_units

if TYPE_CHECKING:
    import torch_pruning as tp

LAYERS = (nn.modules.conv._ConvNd, nn.Linear)
NORMS = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.modules.instancenorm._InstanceNorm, nn.LayerNorm)


def is_depthwise(module: nn.Module) -> bool:
    """A conv with one group per output channel, as torch-pruning classifies it (its channels go with
    its inputs' channels, so it scales with one channel count)."""
    conv = isinstance(module, nn.modules.conv._ConvNd)
    return conv and module.groups == module.out_channels and module.out_channels > 1


@dataclass(frozen=True)
class Member:
    """Channels ``idxs`` of one side of ``module``; ``channels[i]`` is the group channel of ``idxs[i]``.

    Sorted by group channel. A concatenation consumer gets offset idxs (its input channels 32..47 may
    be channels 0..15 of the group); a flatten consumer repeats each group channel.
    """

    module: str
    side: Literal["in", "out"]
    idxs: tuple[int, ...]
    channels: tuple[int, ...]


@dataclass(frozen=True)
class ChannelGroup:
    """Channels that are kept or removed together across all ``members``.

    ``key`` is the root module's qualified name. ``unit`` consecutive group channels go together (a
    GroupNorm group; an attention head; one channel of every group of a grouped conv, whose group
    channels are numbered so that its units are consecutive).
    ``gate_points`` are the out-members whose outputs a gate multiplies: every norm, and every conv or
    linear layer whose output does not go straight into a norm.
    """

    key: str
    size: int
    unit: int
    members: tuple[Member, ...]
    gate_points: tuple[Member, ...]

    @property
    def units(self) -> int:
        return self.size // self.unit


class DependencyAnalysis:
    """The prunable channel groups of one model, in module order, plus the live torch-pruning graph."""

    def __init__(self, model: nn.Module, graph: tp.DependencyGraph, tp_groups: dict[str, tp.Group]) -> None:
        self.model = model
        self.graph = graph
        names: dict[nn.Module | nn.Parameter, str] = {m: n for n, m in model.named_modules()}
        params = {p: n for n, p in model.named_parameters()}
        forced = forced_units(model)
        self.groups: list[ChannelGroup] = []
        self.frozen: dict[str, str] = {}  # group key -> why it stays whole
        self._orders: dict[str, torch.Tensor] = {}  # group key -> torch-pruning channel of each channel
        for key, group in tp_groups.items():
            try:
                channel_group, self._orders[key] = _channel_group(key, group, graph, names, params, forced)
                self.groups.append(channel_group)
            except _Unprunable as exc:
                self.frozen[key] = str(exc)
        self._tp_groups = {g.key: tp_groups[g.key] for g in self.groups}
        self._by_key = {g.key: g for g in self.groups}

    def __getitem__(self, key: str) -> ChannelGroup:
        return self._by_key[key]

    def __iter__(self) -> Iterator[ChannelGroup]:
        return iter(self.groups)

    def __len__(self) -> int:
        return len(self.groups)

    @property
    def keys(self) -> list[str]:
        return [g.key for g in self.groups]

    @property
    def sizes(self) -> list[int]:
        return [g.size for g in self.groups]

    @property
    def units(self) -> list[int]:
        return [g.unit for g in self.groups]

    def importance(self, criterion: Callable[[tp.Group], torch.Tensor | None]) -> dict[str, torch.Tensor]:
        """Per-channel scores of a torch-pruning importance (``tp.importance.GroupMagnitudeImportance()``,
        ``TaylorImportance()`` after a backward pass, ...) on the analysed model's current weights.
        Groups the criterion cannot score (it returns None) are left out."""
        scores = {key: criterion(group) for key, group in self._tp_groups.items()}
        return {key: s.detach().flatten()[self._orders[key]] for key, s in scores.items() if s is not None}


def analyze(
    model: nn.Module, example_input: Inputs, ignored_layers: list[nn.Module] | None = None
) -> DependencyAnalysis:
    """Trace ``model`` on ``example_input`` (a tensor, tuple or dict) and find its prunable channel groups.

    Layers that produce the network's output (a classifier, a U-Net's last conv) are never pruned: their
    channels are the task's classes or image channels. Pass further layers to keep in ``ignored_layers``.
    A group that would split a GroupNorm's groups where two channel groups meet in one norm (a
    concatenation whose parts are not multiples of the norm's group size), or that passes through a
    LayerNorm over its channels (a transformer block's width), stays whole and is listed in ``frozen``
    with the reason: removing part of what a norm normalises jointly changes its statistics, so no mask
    of it could equal a sliced model. So does a group that reaches a parameter held outside a layer (a
    ConvNeXt layer scale, a ViT position embedding or class token: torch-pruning finds these and takes
    their last non-singleton dimension as the channels; the toolbox does not reshape them); in the
    families this toolbox prunes those groups are LayerNorm widths anyway.

    A grouped conv keeps its number of groups: each unit of its input and output groups is one channel
    of every conv group, so all groups shrink alike (RegNet's and ResNeXt's group width constraint).
    """
    import torch_pruning as tp  # heavy (it imports timm and torchvision when installed): loaded on use

    was_training = model.training
    frozen = [p for p in model.parameters() if not p.requires_grad]  # autograd would not trace them
    try:
        for parameter in frozen:
            parameter.requires_grad_(True)
        with torch.enable_grad():
            graph = tp.DependencyGraph().build_dependency(
                model, example_input, output_transform=output_tensors, verbose=False
            )
    except Exception as exc:  # any tracing failure is the model's, reported as such
        raise ModelError(
            f"torch-pruning cannot trace {type(model).__name__}: {type(exc).__name__}: {exc}",
            "the forward must run on the example input with autograd enabled and use nn.Module layers",
        ) from exc
    finally:
        model.train(was_training)
        for parameter in frozen:
            parameter.requires_grad_(False)
    ignored = [*(ignored_layers or []), *_output_layers(graph)]
    order = {module: i for i, module in enumerate(model.modules())}
    groups = sorted(graph.get_all_groups(ignored_layers=ignored), key=lambda g: order[g[0].dep.target.module])
    names = {module: name for name, module in model.named_modules()}
    return DependencyAnalysis(model, graph, {names[g[0].dep.target.module]: g for g in groups})


def _output_layers(graph: tp.DependencyGraph) -> list[nn.Module]:
    """Conv/linear layers whose output reaches the network output through channel-preserving ops."""
    found, seen = [], set()
    stack = [node for node in graph.module2node.values() if not node.outputs]
    while stack:
        node = stack.pop()
        if node in seen:
            continue
        seen.add(node)
        if isinstance(node.module, LAYERS):
            found.append(node.module)
        else:
            stack.extend(node.inputs)
    return found


class _Unprunable(Exception):
    """A channel group that cannot be removed in whole units of every norm it passes through."""


def _channel_group(
    key: str,
    group: tp.Group,
    graph: tp.DependencyGraph,
    names: dict[nn.Module | nn.Parameter, str],
    params: dict[nn.Parameter, str],
    forced: dict[str, Unit],
) -> tuple[ChannelGroup, torch.Tensor]:
    """The group as records, and which torch-pruning root channel each group channel is."""
    pairs: list[tuple[str, str, list[tuple[int, int]]]] = []
    for item in group:
        module = item.dep.target.module
        if isinstance(module, nn.Parameter):
            raise _Unprunable(
                f"it reaches the parameter {params.get(module, '?')!r} held outside a layer (a layer "
                "scale or an embedding), which slicing does not reshape"
            )
        if module not in names:  # torch-pruning's stand-ins for functional ops (add, cat, reshape)
            continue
        side = "out" if graph.is_out_channel_pruning_fn(item.dep.handler) else "in"
        pairs.append((names[module], side, list(zip(item.root_idxs, item.idxs, strict=True))))
    size = len(group[0].idxs)
    modules = {name: module for module, name in names.items() if isinstance(module, nn.Module)}
    units = {(name, side): u for name, side, _ in pairs if (u := _layer_unit(name, side, modules, forced))}
    position = _renumbering(pairs, units, modules, size)
    members = [
        Member(name, side, tuple(i for _, i in ordered), tuple(c for c, _ in ordered))
        for name, side, channel_idx in pairs
        for ordered in [sorted((int(position[int(c)]), i) for c, i in channel_idx)]
    ]
    unit = _unit(key, members, modules)
    for u in units.values():
        unit = math.lcm(unit, u.size * u.repeats)
    if size % unit:
        raise _Unprunable(f"its {size} channels are not a multiple of the blocks its layers need ({unit})")
    gate_points = _gate_points(members, graph, modules)
    return ChannelGroup(key, size, unit, tuple(members), gate_points), position.argsort()


def _layer_unit(name: str, side: str, modules: dict[str, nn.Module], forced: dict[str, Unit]) -> Unit | None:
    """The unit one side of a layer imposes: a grouped (not depthwise) conv's, or a layer rule's."""
    module = modules[name]
    if isinstance(module, nn.modules.conv._ConvNd) and module.groups > 1 and not is_depthwise(module):
        return Unit(1, module.groups)
    return forced.get(name) if side == "out" else None


def _renumbering(
    pairs: list[tuple[str, str, list[tuple[int, int]]]],
    units: dict[tuple[str, str], Unit],
    modules: dict[str, nn.Module],
    size: int,
) -> torch.Tensor:
    """The group channel number of each torch-pruning root channel, chosen so that the units of strided
    layers (:class:`Unit` with ``repeats`` > 1) are consecutive; the identity when there are none."""
    found: torch.Tensor | None = None
    for name, side, channel_idx in pairs:
        u = units.get((name, side))
        if u is None or u.repeats == 1:
            continue
        layer = modules[name]
        channels = _side_channels(layer, side)
        if len(channel_idx) != size or channels != size or channels % (u.size * u.repeats):
            raise _Unprunable(f"{name!r} needs its channels in blocks {u} that the group does not cover")
        position = torch.empty(size, dtype=torch.long)
        for c, i in channel_idx:
            position[int(c)] = u.position(i, channels)
        if found is not None and not torch.equal(found, position):
            raise _Unprunable(f"the channel blocks of {name!r} do not line up with its group's other layers")
        found = position
    return found if found is not None else torch.arange(size)


def _side_channels(layer: nn.Module, side: str) -> int:
    """The input or output channels of a conv or linear layer."""
    if isinstance(layer, nn.Linear):
        return layer.in_features if side == "in" else layer.out_features
    return layer.in_channels if side == "in" else layer.out_channels


def _unit(key: str, members: list[Member], modules: dict[str, nn.Module]) -> int:
    """GroupNorm normalises groups of channels jointly, so whole GroupNorm groups are kept or removed.

    A unit of ``per_group`` group channels works when the member's norm inputs, in norm order, fall
    into whole norm groups that each hold one aligned block of group channels (a concatenation of a
    group with itself, as where a UNet's stream meets its own skip, maps each block to two norm groups).
    """
    unit = 1
    for m in members:
        norm = modules[m.module]
        if isinstance(norm, nn.LayerNorm):
            raise _Unprunable(f"LayerNorm {m.module!r} normalises all its channels jointly")
        if not isinstance(norm, nn.GroupNorm):
            continue
        per_group = norm.num_channels // norm.num_groups
        idxs, channels = torch.tensor(m.idxs), torch.tensor(m.channels)
        order = idxs.argsort()
        if len(idxs) % per_group or not all(_aligned(v[order], per_group) for v in (idxs, channels)):
            raise _Unprunable(f"it would split the groups of GroupNorm {m.module!r}")
        unit = math.lcm(unit, per_group)
    return unit


def _aligned(values: torch.Tensor, size: int) -> bool:
    """``values`` read in rows of ``size`` are runs ``k * size, ..., k * size + size - 1``."""
    blocks = values.view(-1, size)
    return torch.equal(blocks, blocks[:, :1] + torch.arange(size)) and not (blocks[:, 0] % size).any()


def _gate_points(
    members: list[Member], graph: tp.DependencyGraph, modules: dict[str, nn.Module]
) -> tuple[Member, ...]:
    """Gate after normalisation, so a masked model computes exactly what the sliced model computes."""
    points = []
    for m in members:
        module = modules[m.module]
        if m.side != "out" or not isinstance(module, (*LAYERS, *NORMS)):
            continue
        consumers = graph.module2node[module].outputs
        if isinstance(module, LAYERS) and len(consumers) == 1 and isinstance(consumers[0].module, NORMS):
            continue  # the norm that follows is gated instead
        points.append(m)
    return tuple(points)
