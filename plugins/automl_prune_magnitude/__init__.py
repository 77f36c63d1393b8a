"""Magnitude baseline: the strategy every other one is compared against.

Channel importance by L1 or L2 weight magnitude, first-order Taylor (|weight x gradient| of the task's
training loss on a few training batches; for diffusion, Diff-Pruning's low-noise timesteps, see
``DiffusionTask.loss``) or random, from torch-pruning's group importance criteria (summed over every layer a
channel group touches). Channels are kept globally (mean-normalised scores ranked across layers) or
uniformly (the same ratio per layer) until the exact FLOPs model meets the trial's target; the model is
sliced physically and fine-tuned with the task's own training for ``finetune_epochs``, the same budget
the other strategies get (``Context.finish``). On an image-translation GAN the traced forward is the
generator's, so only the generator is pruned and its discriminator is fine-tuned unpruned beside it: the
G-only baseline of the ``gan`` strategy. On a diffusion UNet every channel group, attention heads
included, is pruned in whole GroupNorm groups and heads, and fine-tuning uses the denoising loss.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from automl_prune.api import Candidate, Context, Inputs, Strategy, builtin_space_path, hookimpl
from automl_prune.pruning import (
    GatedFlops,
    aligned_units,
    analyze,
    keep_for_target,
    kept_indices,
    slice_model,
    smallest_flops,
)

TAYLOR_BATCHES = 4


def _criterion(name: str) -> Any:
    import torch_pruning as tp  # heavy: loaded when a trial runs, not when the plugin registers

    if name in ("l1", "l2"):
        return tp.importance.GroupMagnitudeImportance(p=1 if name == "l1" else 2, normalizer=None)
    if name == "taylor":
        return tp.importance.GroupTaylorImportance(normalizer=None)
    if name == "random":
        return tp.importance.RandomImportance()
    raise ValueError(f"unknown criterion {name!r}")


def _accumulate_gradients(model: nn.Module, context: Context) -> None:
    """Gradients of the task's training loss on a few batches, which the Taylor criterion reads."""
    model.zero_grad()
    model.eval()
    for i, batch in enumerate(context.loader("train", shuffle=True)):
        if i == TAYLOR_BATCHES:
            break
        context.task.loss(model, batch, context.data, context.device).backward()


class MagnitudeStrategy(Strategy):
    name = "magnitude"
    tasks = ("classification", "image-translation", "diffusion", "text-to-image")
    space = builtin_space_path("magnitude")
    description = "L1/L2/Taylor/random channel importance, global or uniform, equal-budget fine-tuning"

    def min_flops(self, architecture: nn.Module, example: Inputs) -> float:
        return float(smallest_flops(architecture, example))

    def run(self, context: Context, params: dict[str, Any], artifacts: dict[str, Any]) -> Candidate:
        model = copy.deepcopy(context.model)
        example = context.example_input(1)
        analysis = analyze(model, example)
        if params["criterion"] == "taylor":
            _accumulate_gradients(model, context)
        with torch.random.fork_rng():
            torch.manual_seed(context.seed)
            scores = analysis.importance(_criterion(params["criterion"]))
        flops = GatedFlops(model, analysis, example)
        target = context.call_target_flops(params)
        units = aligned_units(analysis, params.get("channel_multiple", 1))  # optional: spaces before it
        keep = keep_for_target(scores, units, lambda k: float(flops(k)), target, params["scope"])
        model.zero_grad(set_to_none=True)
        pruned = slice_model(model, example, keep, analysis)
        return context.finish(
            pruned, params, target_flops=context.target_flops(params), spec={"keep": kept_indices(keep)}
        )


@hookimpl
def register_strategies(register: Any) -> None:
    register(MagnitudeStrategy)
