"""BatchNorm recalibration: fresh running statistics for a network whose architecture just changed.

After a search switches kernel sizes or channels, the running means and variances describe networks
that no longer exist, and an eval-mode forward is off even when the train-mode loss was low.
Re-estimating them on a few training batches (cumulative average, no weight change) is the usual fix
in weight-sharing NAS.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

BATCHES = 20


def recalibrate_batchnorm(
    model: nn.Module, batches: Iterable[tuple[torch.Tensor, ...]], device: torch.device, limit: int = BATCHES
) -> nn.Module:
    """Reset every BatchNorm's running statistics and re-estimate them on up to ``limit`` batches of
    ``batches`` (the first element of each is the input). Weights are untouched; returns ``model`` in
    eval mode."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return model.eval()
    saved = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average over the batches seen
    model.train()
    try:
        with torch.no_grad():
            for i, batch in enumerate(batches):
                if i == limit:
                    break
                model(batch[0].to(device))
    finally:
        for m, momentum in zip(norms, saved, strict=True):
            m.momentum = momentum
    return model.eval()
