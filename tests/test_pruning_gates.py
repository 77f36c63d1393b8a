"""Gates, Gumbel-sigmoid sampling and the architecture generator."""

from __future__ import annotations

import pytest
import torch

from automl_prune.pruning import (
    ArchitectureGenerator,
    ChannelGates,
    analyze,
    deterministic_gates,
    gumbel_sigmoid,
)
from tests.test_pruning_graph import build, example


def test_gumbel_gates_start_open_and_hard_gates_are_exact_with_straight_through_gradients() -> None:
    logits = torch.zeros(10_000, requires_grad=True)
    weights = torch.arange(10_000.0)
    soft = gumbel_sigmoid(logits, hard=False, generator=torch.Generator().manual_seed(0))
    assert 0.9 < soft.mean() < 1 and ((soft >= 0) & (soft <= 1)).all()
    hard = gumbel_sigmoid(logits, generator=torch.Generator().manual_seed(0))
    assert set(hard.unique().tolist()) == {0.0, 1.0}
    assert torch.equal(hard, (soft >= 0.5).float())
    hard_grad = torch.autograd.grad((hard * weights).sum(), logits)[0]
    soft_grad = torch.autograd.grad((soft * weights).sum(), logits)[0]
    assert torch.equal(hard_grad, soft_grad) and soft_grad.abs().sum() > 0


def test_temperature_sharpens_and_the_offset_shifts_the_gates() -> None:
    logits = torch.full((10_000,), -3.0)
    cold = gumbel_sigmoid(logits, temperature=0.1, hard=False, generator=torch.Generator().manual_seed(0))
    warm = gumbel_sigmoid(logits, temperature=2.0, hard=False, generator=torch.Generator().manual_seed(0))
    assert ((cold - 0.5).abs() > 0.4).float().mean() > ((warm - 0.5).abs() > 0.4).float().mean()
    assert 0.4 < gumbel_sigmoid(logits, generator=torch.Generator().manual_seed(0)).mean() < 0.6
    assert gumbel_sigmoid(logits, offset=0.0, generator=torch.Generator().manual_seed(0)).mean() < 0.1


def test_deterministic_gates_threshold_logits_plus_offset() -> None:
    assert deterministic_gates(torch.tensor([-3.5, -3.0, -2.5, 4.0])).tolist() == [0.0, 1.0, 1.0, 1.0]
    assert deterministic_gates(torch.tensor([-0.1, 0.1]), offset=0.0).tolist() == [0.0, 1.0]


def test_generator_gives_per_channel_logits_shared_within_units() -> None:
    analysis = analyze(build("unet-group"), example())
    generator = ArchitectureGenerator.from_analysis(analysis, hidden=8)
    logits = generator()
    assert list(logits) == analysis.keys
    assert [len(z) for z in logits.values()] == analysis.sizes
    sampled, decided = generator.sample(), generator.deterministic()
    for group in analysis:
        for values in (logits[group.key], sampled[group.key], decided[group.key]):
            assert torch.equal(values, values.view(-1, group.unit)[:, :1].expand(-1, group.unit).flatten())
    assert all(v.tolist() == [1.0] * len(v) for v in decided.values())  # offset 3: gates start open


def test_generator_without_keys_returns_lists_and_conditioning_changes_the_logits() -> None:
    generator = ArchitectureGenerator([4, 6], hidden=8, condition_dim=3)
    a, b = generator(torch.zeros(3)), generator(torch.ones(3))
    assert isinstance(a, list) and [len(z) for z in a] == [4, 6]
    assert not torch.allclose(a[0], b[0])
    with pytest.raises(ValueError, match="condition"):
        generator()
    with pytest.raises(ValueError, match="not multiples"):
        ArchitectureGenerator([4, 6], units=[4, 4])


def test_gates_are_differentiable_hooks_that_can_be_removed() -> None:
    model = build("resnet20")
    x = example(batch=2)
    analysis = analyze(model, x)
    with torch.no_grad():
        reference = model(x)
    generator = ArchitectureGenerator.from_analysis(analysis, hidden=8)
    with ChannelGates(model, analysis) as gates:
        gates.set({k: torch.ones(s) for k, s in zip(analysis.keys, analysis.sizes, strict=True)})
        assert torch.allclose(model(x), reference)
        gates.set(generator.sample(hard=False))
        model(x).square().mean().backward()
        assert generator.tokens.grad is not None and generator.tokens.grad.abs().sum() > 0
        gates.set({"layer1.0.conv1": torch.zeros(16)})
        with torch.no_grad():
            assert not torch.allclose(model(x), reference)
        with pytest.raises(ValueError, match="shape"):
            gates.set({"layer1.0.conv1": torch.zeros(8)})
    with torch.no_grad():
        assert torch.allclose(model(x), reference)  # leaving the block removed the hooks


def test_a_closed_gate_zeroes_exactly_its_channels_after_the_norm() -> None:
    model = build("resnet20")
    analysis = analyze(model, example())
    seen = {}
    gate = torch.ones(16)
    gate[[2, 5]] = 0
    with ChannelGates(model, analysis) as gates, torch.no_grad():
        gates.set({"layer1.0.conv1": gate})
        # registered after the gates, so it sees the gated output
        model.layer1[0].bn1.register_forward_hook(lambda m, i, o: seen.update(bn1=o))
        model(example())
    channel_mass = seen["bn1"].abs().sum((0, 2, 3))
    assert (channel_mass == 0).nonzero().flatten().tolist() == [2, 5]


def test_per_sample_gates_act_as_each_sample_with_its_own_gates() -> None:
    """Rows of a (batch, size) gate: sample i computed as if the batch had gate row i (a router's
    per-prompt architectures)."""
    model = build("resnet20").eval()
    x = example(batch=3)
    analysis = analyze(model, x)
    torch.manual_seed(0)
    rows = {k: torch.rand(3, s) for k, s in zip(analysis.keys, analysis.sizes, strict=True)}
    with ChannelGates(model, analysis) as gates, torch.no_grad():
        gates.set(rows)
        together = model(x)
        for i in range(3):
            gates.set({k: v[i] for k, v in rows.items()})
            torch.testing.assert_close(together[i : i + 1], model(x[i : i + 1]))
        with pytest.raises(ValueError, match="shape"):
            gates.set({"layer1.0.conv1": torch.zeros(3, 8)})
