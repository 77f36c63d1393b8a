"""Resource losses that push a gated network towards a FLOPs (or any resource) target ``p``.

Both are scale-free (a ratio), so one weight works for models of any size, and differentiable in
the resource ``r`` (e.g. ``GatedFlops`` of soft gates).
"""

from __future__ import annotations

import torch


def log_hinge(resource: torch.Tensor, target: float | torch.Tensor) -> torch.Tensor:
    """log(max(r / p, 1)): zero at or under the budget, so it never pushes below it."""
    return torch.log(torch.clamp(resource / target, min=1.0))


def log_abs(resource: torch.Tensor, target: float | torch.Tensor) -> torch.Tensor:
    """|log(r / p)|: pulls the resource to the target from both sides."""
    return torch.abs(torch.log(resource / target))
