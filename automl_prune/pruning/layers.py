"""Layer rules: what the toolbox must know about a module type beyond torch-pruning's channel graph.

torch-pruning reshapes convs, linears and norms, but a container module may hold facts about their
widths (diffusers' ``Attention.heads``, ``Upsample2D.channels``) or need channels removed in blocks (an
attention head). A plugin registers a :class:`LayerRule` per such type through the
``register_layer_rules`` hook, instead of the toolbox keeping a closed list:

- ``units(module)``: for child layers whose *output* channels must be kept or removed in blocks, the
  block: an int for consecutive channels (an attention head's ``to_q``/``to_k``/``to_v`` by the head
  dimension, so the softmax scale, which depends on it, stays the same and a masked head equals a
  removed one), or a :class:`Unit` for a block repeated at equal strides (a fused ``qkv`` projection:
  a head's rows in each of its q, k and v thirds);
- ``follow(sliced, original)``: fix the module's attributes after slicing (the new head count);
- ``attributes``: the attributes a saved pruned model records for the module and sets on load;
- ``rebuild``: for a layer type that pruning reshapes itself (the toolbox knows convs, linears and
  norms), the constructor arguments that rebuild a reshaped one, read back from its attributes, so a
  saved pruned model holding one loads (only registered types are ever imported on load).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn


@dataclass(frozen=True)
class Unit:
    """Channels of one side of a layer that are kept or removed together: ``size`` consecutive channels
    in each of ``repeats`` equal slices of the layer's channels (``Unit(head_dim, 3)``: one head of a
    fused q/k/v projection; ``Unit(1, groups)``: one channel of every group of a grouped conv)."""

    size: int
    repeats: int = 1

    def position(self, idx: int, channels: int) -> int:
        """Where channel ``idx`` of ``channels`` goes when the layer's channels are renumbered so that
        each unit is consecutive (unit 0 first): the identity when ``repeats`` is 1."""
        stride = channels // self.repeats
        unit, offset = divmod(idx % stride, self.size)
        return unit * self.size * self.repeats + idx // stride * self.size + offset


@dataclass(frozen=True)
class LayerRule:
    """How pruning and persistence treat modules of the class ``type``, named ``"package.module.Class"``
    so registering a rule imports nothing (see the module docstring)."""

    type: str
    units: Callable[[nn.Module], dict[str, int | Unit]] | None = None
    follow: Callable[[nn.Module, nn.Module], None] | None = None
    attributes: tuple[str, ...] = ()
    rebuild: tuple[str, ...] | None = None


def layer_rules() -> dict[str, LayerRule]:
    """Every registered rule by module type (from the plugins' ``register_layer_rules`` hooks)."""
    from automl_prune.plugins import get_plugins

    return {rule.type: rule for rule in get_plugins().layer_rules}


def type_name(cls: type) -> str:
    """The ``"package.module.Class"`` name rules are registered under."""
    return f"{cls.__module__}.{cls.__qualname__}"


def rule_of(module: nn.Module, rules: dict[str, LayerRule]) -> LayerRule | None:
    """The rule of ``module``'s class or of its nearest registered base class."""
    for cls in type(module).__mro__:
        rule = rules.get(type_name(cls))
        if rule is not None:
            return rule
    return None


def forced_units(model: nn.Module) -> dict[str, Unit]:
    """Module name -> the output-channel unit the layer rules impose on ``model``'s layers."""
    rules = layer_rules()
    out: dict[str, Unit] = {}
    for name, module in model.named_modules():
        rule = rule_of(module, rules)
        if rule is not None and rule.units is not None:
            prefix = f"{name}." if name else ""
            for child, unit in rule.units(module).items():
                out[prefix + child] = unit if isinstance(unit, Unit) else Unit(unit)
    return out


def follow_rules(sliced: nn.Module, original: nn.Module) -> None:
    """After slicing, let each rule fix its modules' attributes from the new child widths."""
    rules = layer_rules()
    before = dict(original.named_modules())
    for name, module in sliced.named_modules():
        rule = rule_of(module, rules)
        if rule is not None and rule.follow is not None and name in before:
            rule.follow(module, before[name])
