"""Read a discrete architecture off an architecture generator, meet the budget, slice, check.

Budget repair. A generator trained on *sampled* gates (with a hinge or |log| resource loss) lands near
its target with its noise-free architecture 1[z + b >= 0], but rarely on it: a little above or below.
The target is a hard constraint of the search (fvcore's count of the sliced model), and compared
methods must sit at equal FLOPs, so the architecture is repaired in the generator's own order of
preference, on the exact FLOPs model ``GatedFlops``:

1. every group keeps at least its highest-logit unit (slicing never empties a group, and a closed
   group would make the masked model differ from the sliced one);
2. over the target: close open units from the lowest logit up until it fits (a group's last open unit
   is never closed);
3. then (under the target, or after step 2 overshot it by closing an expensive unit): reopen closed
   units from the highest logit down, each one only if it still fits, so the extracted model uses the
   budget the trial asked for (it ends within about one cheap unit's cost of it).

If the smallest architecture (one unit per group) exceeds the target, that is returned and the
orchestrator records the trial as infeasible. ``choose`` picks among candidate architectures by the
validation quality of the *masked* model (never the test split); ``slice_checked`` slices physically
and checks the slice against the masked model on a batch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import nn

from automl_prune.model_io import Inputs, call, evaluating, main_output, positional
from automl_prune.pruning.flops_model import GatedFlops
from automl_prune.pruning.gates import ChannelGates
from automl_prune.pruning.graph import DependencyAnalysis
from automl_prune.pruning.gumbel import OFFSET, deterministic_gates
from automl_prune.pruning.surgery import slice_model

Keep = dict[str, torch.Tensor]


class SliceMismatchError(RuntimeError):
    """The physically sliced model does not compute what the masked model computes."""


def unit_logits(logits: dict[str, torch.Tensor], analysis: DependencyAnalysis) -> dict[str, torch.Tensor]:
    """Per-unit logits from per-channel logits (a unit's channels share one logit)."""
    return {g.key: logits[g.key].detach().cpu().view(g.units, g.unit)[:, 0].double() for g in analysis}


def _channels(units: dict[str, torch.Tensor], analysis: DependencyAnalysis) -> Keep:
    return {g.key: units[g.key].repeat_interleave(g.unit) for g in analysis}


def repair_to_budget(
    logits: dict[str, torch.Tensor],
    analysis: DependencyAnalysis,
    flops: GatedFlops,
    target: float,
    *,
    offset: float = OFFSET,
    fill: bool = True,
) -> Keep:
    """Boolean keep masks (per channel) from per-channel ``logits``, repaired to ``target`` FLOPs.

    See the module docstring for the rule. ``fill=False`` skips step 3 (only ever closes units).
    ``flops`` is evaluated once per unit changed (a vector op each, well under a millisecond).
    """
    z = unit_logits(logits, analysis)
    gates = {k: deterministic_gates(v, offset) for k, v in z.items()}
    for key, g in gates.items():
        if not g.any():
            g[z[key].argmax()] = 1.0

    def cost() -> float:
        return float(flops(_channels(gates, analysis)))

    ranked = sorted(((float(v), key, i) for key, zs in z.items() for i, v in enumerate(zs.tolist())))
    current = cost()
    for _, key, i in ranked:
        if current <= target:
            break
        if gates[key][i] == 1 and gates[key].sum() > 1:
            gates[key][i] = 0.0
            current = cost()
    if fill and current <= target:
        for _, key, i in reversed(ranked):
            if gates[key][i] == 1:
                continue
            gates[key][i] = 1.0
            trial = cost()
            if trial <= target:
                current = trial
            else:
                gates[key][i] = 0.0
    return {k: v >= 0.5 for k, v in _channels(gates, analysis).items()}


@torch.no_grad()
def masked_outputs(model: nn.Module, analysis: DependencyAnalysis, keep: Keep, x: Inputs) -> torch.Tensor:
    """``model``'s (main) output on ``x`` with the channels ``keep`` drops gated to zero (the model stays
    unchanged)."""
    device = next(iter(positional(x))).device
    with evaluating(model), ChannelGates(model, analysis) as gates:
        gates.set({k: v.float().to(device) for k, v in keep.items()})
        return main_output(call(model, x))


def masked_quality(model: nn.Module, analysis: DependencyAnalysis, keep: Keep, evaluate: Callable) -> float:
    """``evaluate(model)`` (e.g. validation accuracy) with the channels ``keep`` drops gated to zero."""
    with ChannelGates(model, analysis) as gates:
        gates.set({k: v.float() for k, v in keep.items()})
        return float(evaluate(model))


def choose(
    candidates: list[tuple[int, Keep]],
    model: nn.Module,
    analysis: DependencyAnalysis,
    evaluate: Callable[[nn.Module], float],
) -> tuple[int, Keep, dict[int, float]]:
    """The candidate whose masked model scores best by ``evaluate`` (ties: the later epoch)."""
    scores: dict[int, float] = {}
    seen: dict[tuple, float] = {}
    best: tuple[float, int, Keep] | None = None
    for epoch, keep in candidates:
        signature = tuple(tuple(v.tolist()) for _, v in sorted(keep.items()))
        if signature not in seen:
            seen[signature] = masked_quality(model, analysis, keep, evaluate)
        scores[epoch] = seen[signature]
        if best is None or scores[epoch] >= best[0]:
            best = (scores[epoch], epoch, keep)
    assert best is not None, "no candidate architectures"
    return best[1], best[2], scores


def slice_checked(
    model: nn.Module,
    analysis: DependencyAnalysis,
    keep: Keep,
    example: Inputs,
    batch: Inputs,
    *,
    atol: float = 1e-4,
    rtol: float = 1e-4,
) -> nn.Module:
    """``slice_model`` of ``model``, raising :class:`SliceMismatchError` unless it matches the masked
    model on ``batch`` (both in eval mode)."""
    sliced = slice_model(model, example, keep, analysis)
    device = next(iter(positional(batch))).device
    with ChannelGates(model, analysis) as gates:
        gates.set({k: v.float().to(device) for k, v in keep.items()})
        check_same_outputs(model, sliced, batch, atol=atol, rtol=rtol)
    return sliced.eval()


def check_same_outputs(
    masked: nn.Module, sliced: nn.Module, batch: Inputs, *, atol: float = 1e-4, rtol: float = 1e-4
) -> None:
    """Raise :class:`SliceMismatchError` unless ``sliced`` computes on ``batch`` what ``masked`` (the
    unsliced model with its gates or skips set) computes: both in eval mode, without gradients, in IEEE
    float32 (:func:`ieee_fp32`). Every extraction checks its slice this way, so the FLOPs a search paid
    for are the FLOPs of a model that computes what was scored; both models' modes are restored."""
    with evaluating(masked), evaluating(sliced), ieee_fp32(), torch.no_grad():
        expected = main_output(call(masked, batch))
        out = main_output(call(sliced, batch))
    if out.shape != expected.shape or not torch.allclose(out, expected, atol=atol, rtol=rtol):
        diff = (out - expected).abs().max().item() if out.shape == expected.shape else float("nan")
        raise SliceMismatchError(
            f"the sliced model differs from the masked model (max |diff| = {diff:.3g}); "
            "a gate is not placed where slicing removes the channel: report it with the model's name"
        )


@contextmanager
def ieee_fp32() -> Iterator[None]:
    """Full-precision float32 convolutions and matmuls inside the block.

    CUDA convolutions run in TF32 by default (a 10-bit mantissa), so a masked and a sliced model, which
    reach the same sums by different kernels, differ by ~1e-3 on a GPU; compared in IEEE float32 they
    agree to ~1e-6, as on a CPU.
    """
    conv, matmul = torch.backends.cudnn.conv, torch.backends.cuda.matmul
    saved = conv.fp32_precision, matmul.fp32_precision
    conv.fp32_precision = matmul.fp32_precision = "ieee"
    try:
        yield
    finally:
        conv.fp32_precision, matmul.fp32_precision = saved


def exact_flops_of(flops: GatedFlops) -> Callable[[Keep], float]:
    """A function of hard keep masks giving their exact FLOPs on ``flops``'s model (counted in float64)."""
    return lambda keep: float(flops({k: v.double() for k, v in keep.items()}))
