"""Balanced soft assignment by entropic optimal transport (Sinkhorn-Knopp).

Routing N samples to K options by argmax of a score lets one option take everything (a collapse that
feeds itself: the popular option trains on more data). Sinkhorn finds the transport plan closest to
exp(S / epsilon) whose rows give each sample one unit of mass and whose columns give every option the
same share (N / K), so an argmax over the plan spreads samples evenly while keeping their preferences.
It runs in log space: S / epsilon reaches +-20 for cosine scores at epsilon 0.05, and exp overflows
float32 soon after.
"""

from __future__ import annotations

import math

import torch


def sinkhorn(scores: torch.Tensor, epsilon: float = 0.05, iterations: int = 3) -> torch.Tensor:
    """The (N, K) plan from ``scores`` with rows summing to 1 and columns to about N / K.

    Each iteration scales the columns to N / K, then the rows to 1, so the rows are exact and the columns
    are as balanced as ``iterations`` allow (a few suffice for routing; many give exact equipartition).
    """
    if scores.dim() != 2 or scores.numel() == 0:
        raise ValueError(f"scores must be a non-empty (samples, options) matrix, got shape {scores.shape}")
    if epsilon <= 0 or iterations < 1:
        raise ValueError(f"need epsilon > 0 and iterations >= 1, got {epsilon=}, {iterations=}")
    n, k = scores.shape
    log_plan = scores / epsilon
    for _ in range(iterations):
        log_plan = log_plan - torch.logsumexp(log_plan, dim=0, keepdim=True) + math.log(n / k)
        log_plan = log_plan - torch.logsumexp(log_plan, dim=1, keepdim=True)
    return log_plan.exp()
