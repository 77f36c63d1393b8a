"""The diffusion mixture's experts: extraction checked against the supernet, fine-tuning on an interval,
routing by timestep (in a batch and while sampling), average FLOPs per sampling step, saving."""

from __future__ import annotations

import copy
import math
from itertools import product

import pytest
import torch
from automl_prune_diffusion_moe.agent import steps_per_interval
from automl_prune_diffusion_moe.experts import (
    average_flops_per_step,
    extract_expert,
    finetune_expert,
    mixture,
)
from automl_prune_diffusion_moe.supernet import ElasticUNet, ExpertConfig, distillation_loss

from automl_prune.api import (
    AutomlPruneError,
    ModelError,
    count_flops,
    noise_scheduler,
    sampler_timesteps,
)
from automl_prune.diffusion.sampling import sample
from automl_prune.pruning import CompositeModel, SliceMismatchError, load_pruned, save_pruned
from tests.diffusion_moe_common import EXAMPLE, INFO, UNET, dense_unet

pytest.importorskip("diffusers")

BOUNDARIES = [0, 400, 1000]
#: both intervals, either side of the inner boundary and at the ends
TIMESTEPS = torch.tensor([0, 399, 400, 999, 200, 700])
BATCH = (torch.randn(6, 1, 16, 16, generator=torch.Generator().manual_seed(1)), TIMESTEPS)
CONFIGS = [ExpertConfig(4, 0.75), ExpertConfig(1, 0.5)]
WIDTHS = (1.0, 0.875, 0.75, 0.625, 0.5, 0.375, 0.25)


@pytest.fixture(scope="module")
def dense() -> torch.nn.Module:
    return dense_unet()


@pytest.fixture(scope="module")
def supernet(dense) -> ElasticUNet:
    return ElasticUNet(dense, EXAMPLE, widths=WIDTHS, depths=(4, 1)).eval()


@pytest.fixture(scope="module")
def experts(supernet) -> list[torch.nn.Module]:
    return [extract_expert(supernet, config, check_input=BATCH) for config in CONFIGS]


def test_extracted_experts_equal_the_masked_supernet_under_their_configs(supernet, experts, dense) -> None:
    supernet.set_config(supernet.largest())
    with torch.no_grad():
        outputs = [expert(*BATCH).sample for expert in experts]
        for config, output in zip(CONFIGS, outputs, strict=True):
            supernet.set_config(config)
            torch.testing.assert_close(output, supernet(*BATCH).sample, rtol=1e-4, atol=1e-5)
        supernet.set_config(supernet.largest())
    assert (outputs[0] - outputs[1]).abs().max() > 1e-3  # two different sub-networks
    assert count_flops(experts[1], EXAMPLE) < count_flops(experts[0], EXAMPLE) < count_flops(dense, EXAMPLE)
    assert supernet.config == supernet.largest()  # extraction leaves the supernet as it was


def test_an_expert_that_differs_from_the_masked_supernet_is_refused(supernet, monkeypatch) -> None:
    def perturbed(config: ExpertConfig) -> torch.nn.Module:
        model = ElasticUNet.extract(supernet, config)
        with torch.no_grad():
            model.conv_out.bias.add_(1e-2)
        return model

    monkeypatch.setattr(supernet, "extract", perturbed)
    with pytest.raises(SliceMismatchError, match="differs from the masked model"):
        extract_expert(supernet, CONFIGS[1], check_input=BATCH)


def test_finetuning_lowers_the_experts_loss_on_its_interval_only_training_the_expert(experts, dense) -> None:
    expert = copy.deepcopy(experts[1])
    generator = torch.Generator().manual_seed(2)
    # flat grey images: the noise is what differs from the image's level, learnable in a few steps
    images = (torch.rand(8, 1, 1, 1, generator=generator) * 2 - 1).expand(8, 1, 16, 16).clone()
    noise = torch.randn(images.shape, generator=generator)
    timesteps = torch.randint(400, 1000, (8,), generator=generator)
    noisy = noise_scheduler().add_noise(images, noise, timesteps)
    teacher = {k: v.clone() for k, v in dense.state_dict().items()}

    def loss() -> float:
        with torch.no_grad():
            return float(
                distillation_loss(expert(noisy, timesteps).sample, noise, dense(noisy, timesteps).sample, 1.0)
            )

    before = loss()
    losses = finetune_expert(expert, dense, images, (400, 1000), steps=12, lr=2e-3, batch_size=8, seed=0)
    assert len(losses) == 12 and not expert.training
    assert loss() < 0.8 * before
    assert all(torch.equal(v, teacher[k]) for k, v in dense.state_dict().items())
    with pytest.raises(AutomlPruneError, match="interval"):
        finetune_expert(expert, dense, images, (400, 400), steps=1)


def test_the_mixture_sends_each_timestep_to_its_intervals_expert(experts) -> None:
    composite = mixture(experts, BOUNDARIES)
    x, t = BATCH
    late = t >= 400  # timestep 400 is the second expert's, 399 the first's
    assert late.tolist() == [False, False, True, True, False, True]
    with torch.no_grad():
        out = composite(x, t).sample
        for j, mine in enumerate((~late, late)):
            theirs = experts[1 - j](x[mine], t[mine]).sample
            assert torch.equal(out[mine], experts[j](x[mine], t[mine]).sample), j
            assert not torch.allclose(out[mine], theirs, atol=1e-3), j
    with pytest.raises(ModelError, match="one expert per interval"):
        mixture(experts, [0, 300, 600, 1000])


@pytest.mark.parametrize("sampler", ["ddim", "ddpm"])
def test_sampling_calls_each_expert_for_exactly_the_timesteps_of_its_interval(experts, sampler) -> None:
    composite = mixture(experts, BOUNDARIES)
    calls: list[tuple[int, int]] = []
    hooks = [
        expert.register_forward_pre_hook(lambda _, args, j=j: calls.append((j, int(args[1][0]))))
        for j, expert in enumerate(composite.parts)
    ]
    try:
        images = sample(composite, (2, 1, 16, 16), sampler_name=sampler, steps=10, seed=3)
    finally:
        for hook in hooks:
            hook.remove()
    assert images.shape == (2, 1, 16, 16) and bool(images.isfinite().all())
    visited = sampler_timesteps(sampler, 10)
    assert [t for _, t in calls] == visited  # one expert call per step
    assert calls == [(int(t >= 400), t) for t in visited]
    assert [j for j, _ in calls] == sorted((j for j, _ in calls), reverse=True)  # one switch, at 400
    assert {j for j, _ in calls} == {0, 1}


def test_average_flops_per_step_weights_each_experts_fvcore_by_its_sampler_steps(experts) -> None:
    visited = sampler_timesteps("ddim", 10)
    low = sum(t < 400 for t in visited)
    flops = [count_flops(expert, EXAMPLE) for expert in experts]
    assert 0 < low < len(visited) and flops[0] != flops[1]
    expected = (low * flops[0] + (len(visited) - low) * flops[1]) / len(visited)
    composite = mixture(experts, BOUNDARIES)
    assert average_flops_per_step(composite, BOUNDARIES, visited, EXAMPLE) == pytest.approx(expected)
    assert average_flops_per_step(experts, BOUNDARIES, visited, EXAMPLE) == pytest.approx(expected)


def test_configurations_chosen_for_half_the_dense_flops_per_step_land_within_5_percent(
    supernet, dense
) -> None:
    visited = sampler_timesteps("ddim", 10)
    steps = steps_per_interval(visited, BOUNDARIES)
    budget = 0.5 * count_flops(dense, EXAMPLE)
    table = {config: supernet.flops(config) for config in supernet.configs()}

    def per_step(configs: tuple[ExpertConfig, ...]) -> float:
        return sum(n * table[c] for n, c in zip(steps, configs, strict=True)) / sum(steps)

    chosen = min(
        product(table, repeat=len(steps)), key=lambda configs: abs(math.log(per_step(configs) / budget))
    )
    experts = [extract_expert(supernet, config, check_input=BATCH) for config in chosen]
    measured = average_flops_per_step(mixture(experts, BOUNDARIES), BOUNDARIES, visited, EXAMPLE)
    assert measured == pytest.approx(per_step(chosen))  # the table's prediction is what fvcore counts
    assert measured == pytest.approx(budget, rel=0.05)


def test_the_mixture_saves_and_loads_with_equal_outputs(experts, tmp_path) -> None:
    composite = mixture(experts, BOUNDARIES)
    path = save_pruned(composite, tmp_path / "moe", model_ref=UNET, info=INFO)
    loaded = load_pruned(path)
    assert isinstance(loaded, CompositeModel) and loaded.router.boundaries == BOUNDARIES
    with torch.no_grad():
        assert torch.equal(loaded(*BATCH).sample, composite(*BATCH).sample)
    for expert, part in zip(experts, loaded.parts, strict=True):
        assert [p.shape for p in part.parameters()] == [p.shape for p in expert.parameters()]
