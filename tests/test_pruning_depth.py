"""Elastic depth in the toolbox: hard skips and soft depth gates y = x + d * (f(x) - x) on a block."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from automl_prune.pruning import BlockSkips


def model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(2, 2, 3, padding=1), nn.SiLU(), nn.Conv2d(2, 2, 3, padding=1)).eval()


def test_soft_depth_gates_interpolate_between_the_block_and_its_skip() -> None:
    net, x = model(), torch.randn(3, 2, 5, 5)
    with torch.no_grad():
        full = net(x)
        skipped_input = net[1](net[0](x))  # what block 2 receives
    with BlockSkips(net, ["2"]) as skips:
        skips.set(["2"])
        hard = net(x)
        torch.testing.assert_close(hard, skipped_input)
        skips.set_gates({"2": torch.tensor(0.0)})
        torch.testing.assert_close(net(x), hard)  # d = 0 is the skip
        skips.set_gates({"2": torch.tensor(1.0)})
        torch.testing.assert_close(net(x), full)  # d = 1 is the block
        d = torch.tensor([0.0, 0.5, 1.0], requires_grad=True)  # one gate per batch element
        skips.set_gates({"2": d})
        out = net(x)
        torch.testing.assert_close(out[1], (hard[1] + full[1]) / 2)
        out.sum().backward()
        assert d.grad is not None and d.grad.abs().sum() > 0
        with pytest.raises(KeyError, match="not among the skippable blocks"):
            skips.set_gates({"0": torch.tensor(1.0)})
    torch.testing.assert_close(net(x), full)  # hooks removed
