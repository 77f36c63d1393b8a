"""A differentiable FLOPs count of a gated network, exact for hard gates.

fvcore's per-module counts of the full model are the calibration: a conv or linear layer costs
F * (kept in / in) * (kept out / out), a depthwise conv or a norm F * (kept / channels), where "kept"
sums the gates of the member channels, so removing a group's channel also thins the next layer's
input. fvcore's count of such a layer is a product of its channel counts times a shape constant, which
makes this formula exact for a physically sliced model.

What fvcore counts outside those layers (adaptive pooling, upsampling, functional ops in a forward) is
the remainder. It is modelled as linear in each group's kept channels, its slopes measured on sliced
copies: one probe at the minimum architecture, and only if the remainder moved, a bisection over the
groups (a group's slope is non-negative: fewer channels never cost more). A last probe at another
architecture checks the fit, so an op whose count is not linear in channels is an error, never a
silently wrong budget. A related model's slopes (``hint``: the same network with blocks removed) are
tried first and kept when both probes confirm them, which skips the bisection.
"""

from __future__ import annotations

import copy
from itertools import accumulate

import torch
from torch import nn

from automl_prune.errors import ModelError
from automl_prune.flops import count_flops, module_flops
from automl_prune.model_io import Inputs
from automl_prune.pruning.graph import LAYERS, NORMS, ChannelGroup, DependencyAnalysis, analyze, is_depthwise
from automl_prune.pruning.surgery import hard_keep, slice_model


class GatedFlops:
    """FLOPs of ``model`` (fvcore convention, at ``example_input``) as a function of the group gates.

    ``flops(gates)`` takes ``{key: gate vector}`` (soft or hard; groups left out are open) and returns a
    float64 scalar on the gates' device; for 0/1 gates it equals ``count_flops`` of the sliced model.
    A gate may also be (B, size), one architecture per row: then it returns (B,) counts (1-D gates apply
    to every row). ``full`` is the count of the unpruned model. ``hint``: a FLOPs model of a related
    model whose remainder slopes are tried first (module doc).
    """

    def __init__(
        self,
        model: nn.Module,
        analysis: DependencyAnalysis,
        example_input: Inputs,
        hint: GatedFlops | None = None,
    ) -> None:
        self.analysis = analysis
        self._offsets = dict(zip(analysis.keys, accumulate(analysis.sizes, initial=0), strict=False))
        counts = _module_counts(model, example_input)
        self.full = counts.pop("")
        self._index_layers(dict(model.named_modules()), counts)
        self._remainder = float(self.full - sum(counts.values()))
        self._slopes = torch.zeros(sum(analysis.sizes), dtype=torch.float64)
        self._fit_remainder(model, example_input, hint)

    def __call__(self, gates: dict[str, torch.Tensor]) -> torch.Tensor:
        dropped = 1 - self._flat(gates)
        flops = self._layers(dropped) + self._remainder - (self._slopes * dropped).sum(-1)
        return flops.to(next(iter(gates.values())).device if gates else "cpu")

    def min_flops(self) -> int:
        """FLOPs with every group cut to one unit: the smallest architecture slicing can make."""
        return round(float(self(self._min_gates())))

    def _flat(self, gates: dict[str, torch.Tensor]) -> torch.Tensor:
        """All gates in one CPU float64 vector, or one row per architecture (the counts exceed float32's
        exact integers)."""
        unknown = set(gates) - set(self._offsets)
        if unknown:
            raise KeyError(f"no channel groups {sorted(unknown)} in this model")
        parts = [gates.get(g.key, torch.ones(g.size)).to("cpu", torch.float64) for g in self.analysis]
        rows = torch.broadcast_shapes(*(p.shape[:-1] for p in parts))
        return torch.cat([p.expand(*rows, p.shape[-1]) for p in parts], dim=-1)

    def _layers(self, dropped: torch.Tensor) -> torch.Tensor:
        kept_in = _kept(self._in_total, self._in_rows, dropped[..., self._in_channels])
        kept_out = _kept(self._out_total, self._out_rows, dropped[..., self._out_channels])
        return (self._flops * kept_in / self._in_total * kept_out / self._out_total).sum(-1)

    def _index_layers(self, modules: dict[str, nn.Module], counts: dict[str, int]) -> None:
        """Per-layer fvcore counts and, per layer side, which gate channels thin it."""
        row = {name: i for i, name in enumerate(counts)}
        self._flops = torch.tensor(list(counts.values()), dtype=torch.float64)
        totals = torch.tensor([_channels(modules[name]) for name in counts], dtype=torch.float64)
        self._in_total, self._out_total = totals.view(-1, 2).unbind(1)
        sides: dict[str, tuple[list[int], list[int]]] = {"in": ([], []), "out": ([], [])}
        for group in self.analysis:
            for m in group.members:
                if m.module in row:
                    rows, channels = sides[m.side]
                    rows.extend([row[m.module]] * len(m.idxs))
                    channels.extend(self._offsets[group.key] + c for c in m.channels)
        self._in_rows, self._in_channels = (torch.tensor(v, dtype=torch.long) for v in sides["in"])
        self._out_rows, self._out_channels = (torch.tensor(v, dtype=torch.long) for v in sides["out"])

    def _fit_remainder(self, model: nn.Module, example_input: Inputs, hint: GatedFlops | None) -> None:
        def drop(keys: list[str]) -> float:
            """How much the remainder falls when the groups ``keys`` are cut to one unit."""
            gates = {k: v for k, v in self._min_gates().items() if k in keys}
            sliced = slice_model(model, example_input, hard_keep(gates), self.analysis)
            modelled = float(self._layers(1 - self._flat(gates))) + self._remainder
            return modelled - count_flops(sliced, example_input)

        total = drop(self.analysis.keys)
        if (
            hint is not None
            and self._reuse_slopes(hint, total)
            and self._misfit(model, example_input) is None
        ):
            return
        self._slopes.zero_()
        stack = [(self.analysis.keys, total)]
        while stack:
            keys, total = stack.pop()
            if total == 0:
                continue
            if len(keys) == 1:
                group = self.analysis[keys[0]]
                start = self._offsets[group.key]
                self._slopes[start : start + group.size] = total / (group.size - group.unit)
                continue
            half = keys[: len(keys) // 2]
            half_total = drop(half)
            stack += [(half, half_total), (keys[len(keys) // 2 :], total - half_total)]
        misfit = self._misfit(model, example_input)
        if misfit is not None:
            measured, modelled = misfit
            raise ModelError(
                f"fvcore counts {measured} FLOPs for a sliced {type(model).__name__} but the gated FLOPs "
                f"model gives {modelled:.0f}: an op counted outside conv/linear/norm layers is not "
                "linear in the channel counts (e.g. a matmul between two pruned tensors), or a layer's "
                "count is not proportional to its channels",
                "pass the layers that feed that op in ignored_layers, so their channels stay fixed",
            )

    def _reuse_slopes(self, hint: GatedFlops, total: float) -> bool:
        """Take ``hint``'s slopes of the groups both models share (same key and size); True if they
        explain ``total``, the remainder's fall at the minimum architecture."""
        for group in self.analysis:
            theirs = hint._offsets.get(group.key)
            if theirs is not None and hint.analysis[group.key].size == group.size:
                start = self._offsets[group.key]
                self._slopes[start : start + group.size] = hint._slopes[theirs : theirs + group.size]
        return round(float((self._slopes * (1 - self._flat(self._min_gates()))).sum())) == round(total)

    def _misfit(self, model: nn.Module, example_input: Inputs) -> tuple[int, float] | None:
        """Compare with fvcore at a second architecture, half of every group's units kept: (measured,
        modelled) if they differ."""
        half = {g.key: _first_units(g, max(g.units // 2, 1)) for g in self.analysis}
        sliced = slice_model(model, example_input, hard_keep(half), self.analysis)
        measured, modelled = count_flops(sliced, example_input), float(self(half))
        return None if round(modelled) == measured else (measured, modelled)

    def _min_gates(self) -> dict[str, torch.Tensor]:
        return {g.key: _first_units(g, 1) for g in self.analysis}


def _kept(total: torch.Tensor, rows: torch.Tensor, dropped: torch.Tensor) -> torch.Tensor:
    """Channels each layer side keeps: ``total`` less the ``dropped`` gates (..., members) summed into
    their ``rows``."""
    removed = dropped.new_zeros(*dropped.shape[:-1], total.numel()).index_add(-1, rows, dropped)
    return total - removed


def _first_units(group: ChannelGroup, units: int) -> torch.Tensor:
    """0/1 gates that keep the first ``units`` units of ``group``."""
    return (torch.arange(group.size) < units * group.unit).double()


def _channels(module: nn.Module) -> tuple[int, int]:
    """(in, out) channels of a layer whose count scales with both; norms and depthwise convs scale
    with one channel count, given as out (their members are all out-side)."""
    if isinstance(module, nn.modules.conv._ConvNd):
        return (1 if is_depthwise(module) else module.in_channels), module.out_channels
    if isinstance(module, nn.Linear):
        return module.in_features, module.out_features
    if isinstance(module, nn.GroupNorm):
        return 1, module.num_channels
    if isinstance(module, nn.LayerNorm):
        return 1, module.normalized_shape[-1]
    return 1, module.num_features


def smallest_flops(model: nn.Module, example_input: Inputs) -> int:
    """fvcore FLOPs of ``model`` with every prunable group cut to one unit: the floor any channel-pruning
    strategy reaches. A deep copy is traced, so ``model`` is left exactly as it was."""
    model = copy.deepcopy(model)
    return GatedFlops(model, analyze(model, example_input), example_input).min_flops()


def _module_counts(model: nn.Module, example_input: Inputs) -> dict[str, int]:
    """fvcore counts of the whole model (key "") and of each conv, linear and norm layer."""
    by_module = module_flops(model, example_input)
    layers = {
        name: by_module[name]
        for name, module in model.named_modules()
        if isinstance(module, (*LAYERS, *NORMS)) and by_module.get(name)
    }
    return {"": by_module[""], **layers}
