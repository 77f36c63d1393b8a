"""Kernel-size NAS (EffConv, AAAI 2023): learn every conv layer's kernel size under a budget.

A re-implementation from the paper's description (the authors published no code), following the
project's method spec (shared/methods/kernel_size.md). One trial:

1. ``SearchableCNN`` (``predictor.py``): the base model with its searchable convs (``convert.py``)
   replaced by K_max-wide convs whose support is a differentiable separable mask of a soft size
   (``layers.py``); sizes from a GRU size predictor, weights from a kernel predictor (base weights +
   size-conditioned ring gains).
2. ``search_sizes`` (``search.py``): up to ``search_epochs`` (fractions allowed) of joint training,
   cross-entropy plus a budget loss on the soft parameter or FLOPs count (``cost.py``, exact against
   fvcore at integer sizes); the rounded sizes are repaired to the budget. With ``stop_every`` > 0 it
   ends once the repaired sizes are unchanged over ``stop_patience`` checks (after
   ``stop_min_epochs``).
3. The plain CNN at those sizes, from the centre-cropped predicted weights with BatchNorm statistics
   re-estimated (``final_init=cropped``, which computes exactly what the searchable network computed)
   or re-initialised (``final_init=scratch``), trained for ``finetune_epochs`` with the task's own
   recipe (``Context.finish``, the budget every compared strategy gets). ``search_seconds`` counts
   everything before that training (the BatchNorm re-estimation included).

The budget is the space's budget parameter (``target_ratio``), a ratio of the base model's FLOPs or
parameters (``budget_kind``).

The sizes go into the saved spec (``kernel_sizes``) and a per-layer figure (``figures.py``). The
search starts from the trained base model (``search_init=base``) or from a fresh initialisation of
its architecture (``search_init=scratch``, as in the paper, where search and training start from
nothing).
"""

from __future__ import annotations

import copy
import time
from typing import Any

import torch
from torch import nn

from automl_prune.api import BudgetError, Candidate, Context, Inputs, Strategy, builtin_space_path, hookimpl
from automl_prune.pruning import recalibrate_batchnorm
from automl_prune_kernel_size.convert import kernel_sizes, reinitialise, searchable_layers
from automl_prune_kernel_size.cost import KernelCost
from automl_prune_kernel_size.figures import save_kernel_size_figure
from automl_prune_kernel_size.predictor import SearchableCNN
from automl_prune_kernel_size.search import StopRule, search_sizes


class KernelSizeStrategy(Strategy):
    name = "kernel-size"
    tasks = ("classification",)
    space = builtin_space_path("kernel_size")
    description = (
        "EffConv: per-layer kernel sizes learned with a GRU size predictor and soft masks under a "
        "params/FLOPs budget; the built CNN is trained from cropped weights or from scratch"
    )

    def min_flops(self, architecture: nn.Module, example: Inputs) -> float:
        model = copy.deepcopy(architecture)
        return float(KernelCost.measure(model, searchable_layers(model), example).smallest("flops"))

    def run(self, context: Context, params: dict[str, Any], artifacts: dict[str, Any]) -> Candidate:
        base = copy.deepcopy(context.model).to(context.device)
        if params["search_init"] == "scratch":
            reinitialise(base, context.seed)
        example = context.example_input(1)
        layers = searchable_layers(base)
        cost = KernelCost.measure(base, layers, example)
        base_sizes = kernel_sizes(base, layers)
        kind = str(params["budget_kind"])
        ratio = context.budget_ratio(params)
        full, smallest = cost.exact(base_sizes, kind), cost.smallest(kind)
        target = ratio * full
        if smallest > target:
            least = smallest / full
            raise BudgetError(
                f"a {kind} target of {ratio:g} of the base model is below the {least:.3f} that kernel sizes "
                "reach with every searchable conv at 1x1",
                f"use target_ratio >= {least:.3f} (--set target_ratio=...), or a channel-pruning strategy",
            )
        k_max = int(params["k_max"])
        full_loader = context.loader("train", shuffle=True)
        start = time.perf_counter()
        with torch.random.fork_rng():
            torch.manual_seed(context.seed)
            searchable = SearchableCNN(
                base,
                k_max=k_max,
                sharpness=float(params["sharpness"]),
                modulation=bool(params["modulation"]),
            )
            result = search_sizes(
                searchable,
                cost,
                full_loader,
                target=target,
                kind=kind,
                steps=max(1, round(float(params["search_epochs"]) * len(full_loader))),
                stop=stop_rule(params, len(full_loader)),
                lr=float(params["search_lr"]),
                size_lr=float(params["size_lr"]),
                budget_weight=float(params["budget_weight"]),
                budget_loss=str(params["budget_loss"]),
                device=context.device,
                progress=context.progress,
            )
        built = searchable.build()
        metric = context.task.quality_metric
        if params["final_init"] == "scratch":  # the searched weights are dropped: no BatchNorm to re-estimate
            reinitialise(built, context.seed)
            search_seconds, after_search = time.perf_counter() - start, {}
        else:
            recalibrate_batchnorm(built, context.loader("train", shuffle=True), context.device)
            search_seconds = time.perf_counter() - start
            after_search = {f"val_{metric}_after_search": context.evaluate(built)[metric]}
        figure = save_kernel_size_figure(
            context.figure_path("kernel_sizes"),
            result.sizes,
            result.soft,
            base_sizes,
            k_max=k_max,
            title=f"kernel sizes at {ratio:.2f} of the base {kind} (K_max {k_max})",
        )
        return context.finish(
            built,
            params,
            target_flops=target if kind == "flops" else None,
            metrics={
                **after_search,
                "search_seconds": search_seconds,
                "search_steps": float(result.steps),
                "search_stopped_early": float(result.stopped_early),
                "search_ce_first": result.history[0]["ce"],
                "search_ce_last": result.history[-1]["ce"],
                "search_ratio_last": result.history[-1]["ratio"],
                "predicted_params": float(cost.exact(result.sizes, "params")),
                "predicted_flops": float(cost.exact(result.sizes, "flops")),
                "mean_kernel_size": sum(result.sizes.values()) / len(result.sizes),
            },
            spec={
                "kernel_sizes": result.sizes,
                "kernel_size_search": {
                    "k_max": k_max,
                    "budget_kind": kind,
                    "target": target,
                    "base_sizes": base_sizes,
                    "soft_sizes": result.soft,
                    "rounded_sizes": result.rounded,
                },
            },
            figures=[figure],
        )


def stop_rule(params: dict[str, Any], steps_per_epoch: int) -> StopRule | None:
    """The space's early stop (``stop_every`` 0: none), its minimum converted from epochs to steps."""
    every = int(params["stop_every"])
    if every == 0:
        return None
    minimum = round(float(params["stop_min_epochs"]) * steps_per_epoch)
    return StopRule(every=every, patience=int(params["stop_patience"]), min_steps=minimum)


@hookimpl
def register_strategies(register: Any) -> None:
    register(KernelSizeStrategy)
