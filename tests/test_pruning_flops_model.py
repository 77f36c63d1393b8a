"""The differentiable FLOPs model: exact against fvcore on sliced models, and trainable."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from automl_prune.errors import ModelError
from automl_prune.flops import count_flops
from automl_prune.pruning import ArchitectureGenerator, GatedFlops, analyze, log_abs, log_hinge, slice_model
from tests.test_pruning_graph import ZOO, build, example, random_keep


@pytest.mark.parametrize("name", [*ZOO, "resnet56"])
def test_hard_gates_give_fvcore_count_of_the_sliced_model(name: str) -> None:
    model, x = build(name), example()
    analysis = analyze(model, x)
    flops = GatedFlops(model, analysis, x)
    assert flops.full == count_flops(model, x) == round(float(flops({})))
    for seed in (1, 2):
        keep = random_keep(analysis, seed)
        sliced = slice_model(model, x, keep, analysis)
        assert round(float(flops({k: v.float() for k, v in keep.items()}))) == count_flops(sliced, x)
    smallest = {g.key: torch.arange(g.size) < g.unit for g in analysis}
    assert flops.min_flops() == count_flops(slice_model(model, x, smallest, analysis), x)


def test_soft_gates_interpolate_and_thin_the_next_layer() -> None:
    model, x = build("resnet20"), example()
    analysis = analyze(model, x)
    flops = GatedFlops(model, analysis, x)
    key, size = "layer1.0.conv1", 16
    half = float(flops({key: torch.full((size,), 0.5)}))
    closed = float(flops({key: torch.zeros(size)}))
    assert closed < half < flops.full
    # layer1.0.conv1 out and layer1.0.conv2 in: 2 * 16 * 16 * 9 * 32 * 32 MACs, and a BN of 16 * 32 * 32
    assert flops.full - half == pytest.approx(0.5 * (2 * 16 * 16 * 9 * 1024 + 2 * 16 * 1024))


def test_flops_loss_trains_the_generator_through_soft_and_hard_gates() -> None:
    model, x = build("unet-group"), example()
    analysis = analyze(model, x)
    flops = GatedFlops(model, analysis, x)
    generator = ArchitectureGenerator.from_analysis(analysis, hidden=16)
    for hard in (False, True):
        generator.zero_grad()
        loss = log_hinge(flops(generator.sample(hard=hard)), 0.3 * flops.full)
        loss.backward()
        assert loss > 0
        grads = [p.grad for p in generator.parameters()]
        assert all(g is not None for g in grads) and any(g.abs().sum() > 0 for g in grads)
    optimizer = torch.optim.Adam(generator.parameters(), lr=0.05)
    with torch.no_grad():
        before = float(flops(generator.sample(hard=False, generator=torch.Generator().manual_seed(0))))
    for _ in range(20):
        optimizer.zero_grad()
        log_abs(flops(generator.sample(hard=False)), 0.3 * flops.full).backward()
        optimizer.step()
    with torch.no_grad():
        after = float(flops(generator.sample(hard=False, generator=torch.Generator().manual_seed(0))))
    assert after < before


def test_resource_losses() -> None:
    r = torch.tensor([50.0, 100.0, 200.0], requires_grad=True)
    hinge = log_hinge(r, 100.0)
    assert hinge.tolist() == pytest.approx([0.0, 0.0, 0.6931], abs=1e-4)
    hinge.sum().backward()
    assert r.grad.tolist() == pytest.approx([0.0, 0.0, 1 / 200])
    two_sided = log_abs(r.detach(), torch.tensor(100.0))
    assert two_sided.tolist() == pytest.approx([0.6931, 0.0, 0.6931], abs=1e-4)


def test_a_count_not_linear_in_channels_is_an_error() -> None:
    class Gram(nn.Module):
        """Scales features by their mean Gram entry: a matmul costing (kept channels)^2."""

        def __init__(self) -> None:
            super().__init__()
            self.conv, self.head = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 2, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = torch.relu(self.conv(x))
            features = y.flatten(2)
            return self.head(y * torch.matmul(features, features.transpose(1, 2)).mean())

    model, x = Gram().eval(), torch.randn(1, 3, 8, 8)
    with pytest.raises(ModelError, match="not linear in the channel counts"):
        GatedFlops(model, analyze(model, x), x)
