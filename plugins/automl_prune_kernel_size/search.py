"""The joint search: weights (and kernel predictor) and size predictor trained together.

Loss per batch: ``cross_entropy + budget_weight * budget_loss(resource(s) / target)``, where the
resource is the parameter or FLOPs count (``cost.KernelCost``) at the rounded sizes with the soft
sizes' gradient (straight-through), and the budget loss is the toolbox's ``log_abs`` (pull to the
target from both sides: equal-budget comparisons) or ``log_hinge`` (only push down). Weights use the
task's recipe (SGD, Nesterov 0.9, weight decay 5e-4, cosine lr); the size predictor uses Adam with
the same cosine decay, so the sizes settle before the end. After the last epoch the rounded sizes are
repaired to the budget (``KernelCost.repair``) and pinned.
"""

from __future__ import annotations

import time
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


@dataclass
class SizeSearchResult:
    """Chosen (repaired, pinned) sizes, the rounded soft sizes before the repair, and the history."""

    sizes: dict[str, int]
    rounded: dict[str, int]
    soft: dict[str, float]
    history: list[dict[str, float]]
    seconds: float


def straight_through(sizes: torch.Tensor, k_max: int) -> torch.Tensor:
    """The rounded sizes the forward uses, with the soft sizes' gradient: the budget loss then sees
    the architecture being trained, so the rounded sizes end near the target, not just the soft ones."""
    hard = torch.tensor(
        [nearest_odd(s, k_max) for s in sizes.detach()], dtype=sizes.dtype, device=sizes.device
    )
    return sizes + (hard - sizes).detach()


def search_sizes(
    searchable: SearchableCNN,
    cost: KernelCost,
    loader: DataLoader,
    *,
    target: float,
    kind: str,
    epochs: int,
    lr: float,
    size_lr: float,
    budget_weight: float,
    budget_loss: str,
    device: torch.device,
    progress: Progress,
) -> SizeSearchResult:
    """Train ``searchable`` for ``epochs`` over ``loader`` and return the chosen kernel sizes."""
    if budget_loss not in BUDGET_LOSSES:
        raise ValueError(f"budget_loss must be one of {sorted(BUDGET_LOSSES)}, got {budget_loss!r}")
    penalty = BUDGET_LOSSES[budget_loss]
    start = time.perf_counter()
    searchable.to(device).train()
    weights = torch.optim.SGD(
        searchable.weight_parameters(), lr=lr, momentum=0.9, nesterov=True, weight_decay=5e-4
    )
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(weights, T_max=max(1, epochs * len(loader)))
    sizes_opt = torch.optim.Adam(searchable.predictor.parameters(), lr=size_lr)
    sizes_schedule = torch.optim.lr_scheduler.CosineAnnealingLR(sizes_opt, T_max=max(1, epochs * len(loader)))
    history: list[dict[str, float]] = []
    for _ in progress.bar(range(epochs), "kernel-size search", total=epochs):
        sums = {"loss": 0.0, "ce": 0.0, "budget": 0.0, "ratio": 0.0, "mean_size": 0.0}
        for images, labels in loader:
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
        history.append({k: v / max(1, len(loader)) for k, v in sums.items()})
    searchable.eval()
    with torch.no_grad():
        soft = searchable.soft_sizes().cpu()
    searchable.fix(None)
    rounded = searchable.hard_sizes()
    sizes = cost.repair(soft, rounded, target, kind)
    searchable.fix(sizes)
    return SizeSearchResult(
        sizes=sizes,
        rounded=rounded,
        soft={name: float(s) for name, s in zip(searchable.layers, soft, strict=True)},
        history=history,
        seconds=time.perf_counter() - start,
    )
