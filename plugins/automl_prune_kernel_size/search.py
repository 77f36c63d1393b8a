"""The joint search: weights (and kernel predictor) and size predictor trained together.

Loss per batch: ``cross_entropy + budget_weight * budget_loss(resource(s) / target)``, where the
resource is the parameter or FLOPs count (``cost.KernelCost``) at the rounded sizes with the soft
sizes' gradient (straight-through), and the budget loss is the toolbox's ``log_abs`` (pull to the
target from both sides: equal-budget comparisons) or ``log_hinge`` (only push down). Weights use the
task's recipe (SGD, Nesterov 0.9, weight decay 5e-4, cosine lr); the size predictor uses Adam with
the same cosine decay, so the sizes settle before the end. The rounded sizes are repaired to the
budget (``KernelCost.repair``) and pinned. The search is counted in steps (fractions of an epoch
allowed) and the cosine schedules end at the last step; a ``StopRule`` may end it earlier, once the
repaired sizes (what the search would return if it ended there) hold still.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from automl_prune.api import Progress
from automl_prune.pruning import log_abs, log_hinge
from automl_prune_kernel_size.cost import KernelCost
from automl_prune_kernel_size.layers import nearest_odd
from automl_prune_kernel_size.predictor import SearchableCNN

BUDGET_LOSSES = {"abs": log_abs, "hinge": log_hinge}


@dataclass(frozen=True)
class StopRule:
    """End the search once the repaired sizes hold still: they are checked every ``every`` steps, and
    the search stops after ``patience`` checks in a row without a change, never before ``min_steps``.

    Why: at the benchmark's size lr the sizes settle within 4-12 steps of a 126-step search, and the
    later steps only train weights that a from-scratch final training throws away. The repaired sizes,
    not the rounded ones, because a layer whose soft size sits on a rounding boundary flips between
    two sizes until the end while the repair to the budget returns the same architecture."""

    every: int
    patience: int
    min_steps: int

    def settled(self, step: int, unchanged: int) -> bool:
        return step >= self.min_steps and unchanged >= self.patience


@dataclass
class SizeSearchResult:
    """Chosen (repaired, pinned) sizes, the rounded soft sizes before the repair, the history, and how
    many steps ran (fewer than planned when the stop rule ended the search)."""

    sizes: dict[str, int]
    rounded: dict[str, int]
    soft: dict[str, float]
    history: list[dict[str, float]]
    steps: int
    stopped_early: bool


def straight_through(sizes: torch.Tensor, k_max: int) -> torch.Tensor:
    """The rounded sizes the forward uses, with the soft sizes' gradient: the budget loss then sees
    the architecture being trained, so the rounded sizes end near the target, not just the soft ones."""
    hard = torch.tensor(
        [nearest_odd(s, k_max) for s in sizes.detach()], dtype=sizes.dtype, device=sizes.device
    )
    return sizes + (hard - sizes).detach()


def batches(loader: DataLoader) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """``loader``'s batches pass after pass (each pass reshuffled), for a search counted in steps."""
    if len(loader) == 0:
        raise ValueError("the search loader has no batches")
    for _ in itertools.count():
        yield from loader


def chosen(
    searchable: SearchableCNN, cost: KernelCost, target: float, kind: str
) -> tuple[torch.Tensor, dict[str, int], dict[str, int]]:
    """The soft sizes, their rounding, and the rounding repaired to the budget: what the search returns
    if it ends now."""
    with torch.no_grad():
        soft = searchable.soft_sizes().cpu()
    k_max = searchable.k_max
    rounded = {name: nearest_odd(s, k_max) for name, s in zip(searchable.layers, soft, strict=True)}
    return soft, rounded, cost.repair(soft, rounded, target, kind)


def search_sizes(
    searchable: SearchableCNN,
    cost: KernelCost,
    loader: DataLoader,
    *,
    target: float,
    kind: str,
    steps: int,
    stop: StopRule | None,
    lr: float,
    size_lr: float,
    budget_weight: float,
    budget_loss: str,
    device: torch.device,
    progress: Progress,
) -> SizeSearchResult:
    """Train ``searchable`` for up to ``steps`` batches of ``loader`` and return the chosen kernel sizes."""
    if budget_loss not in BUDGET_LOSSES:
        raise ValueError(f"budget_loss must be one of {sorted(BUDGET_LOSSES)}, got {budget_loss!r}")
    penalty = BUDGET_LOSSES[budget_loss]
    searchable.to(device).train()
    weights = torch.optim.SGD(
        searchable.weight_parameters(), lr=lr, momentum=0.9, nesterov=True, weight_decay=5e-4
    )
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(weights, T_max=steps)
    sizes_opt = torch.optim.Adam(searchable.predictor.parameters(), lr=size_lr)
    sizes_schedule = torch.optim.lr_scheduler.CosineAnnealingLR(sizes_opt, T_max=steps)
    window = min(len(loader), math.ceil(steps / 2))  # per epoch, and at least two points
    history: list[dict[str, float]] = []
    sums = dict.fromkeys(("loss", "ce", "budget", "ratio", "mean_size"), 0.0)
    seen, unchanged, last = 0, 0, None
    for step, (images, labels) in enumerate(
        progress.bar(batches(loader), "kernel-size search", total=steps), start=1
    ):
        images, labels = images.to(device), labels.to(device)
        sizes = searchable.soft_sizes()
        ratio = cost.soft(straight_through(sizes, searchable.k_max), kind) / target
        ce = F.cross_entropy(searchable(images, sizes), labels)
        budget = penalty(ratio, 1.0)
        loss = ce + budget_weight * budget
        weights.zero_grad(set_to_none=True)
        sizes_opt.zero_grad(set_to_none=True)
        loss.backward()
        weights.step()
        sizes_opt.step()
        schedule.step()
        sizes_schedule.step()
        for name, value in (("loss", loss), ("ce", ce), ("budget", budget), ("ratio", ratio)):
            sums[name] += float(value.detach())
        sums["mean_size"] += float(sizes.detach().mean())
        seen += 1
        settled = False
        if stop is not None and step % stop.every == 0:
            now = chosen(searchable, cost, target, kind)[2]
            unchanged = unchanged + 1 if now == last else 0
            last = now
            settled = stop.settled(step, unchanged)
        if seen == window or settled or step == steps:
            history.append({"step": float(step), **{k: v / seen for k, v in sums.items()}})
            sums, seen = dict.fromkeys(sums, 0.0), 0
        if settled or step == steps:
            break
    searchable.eval()
    soft, rounded, sizes = chosen(searchable, cost, target, kind)
    searchable.fix(sizes)
    return SizeSearchResult(
        sizes=sizes,
        rounded=rounded,
        soft={name: float(s) for name, s in zip(searchable.layers, soft, strict=True)},
        history=history,
        steps=step,
        stopped_early=step < steps,
    )
