"""The diffusion-moe strategy end to end on a tiny setting: prepare, one trial, the mixture it returns
(average FLOPs per step at the target), its figures and spec; the budget floor and the final pick; the
space."""

from __future__ import annotations

from itertools import pairwise

import pytest
from automl_prune_diffusion_moe.agent import RoutingAgent
from automl_prune_diffusion_moe.experts import average_flops_per_step
from automl_prune_diffusion_moe.strategy import DiffusionMoEStrategy, equal_allocation, pick_mixture

from automl_prune.api import BudgetError, count_flops, sampler_timesteps
from automl_prune.data.registry import load_dataset
from automl_prune.diffusion.task import DiffusionTask
from automl_prune.pruning import CompositeModel
from automl_prune.space import load_space
from automl_prune.strategy import Context
from tests.diffusion_moe_common import EXAMPLE, UNET, dense_unet
from tests.searches import trial_context

pytest.importorskip("diffusers")

PARAMS = {
    "target_flops_ratio": 0.5,
    "similarity": "gradient",
    "grid_points": 6,
    "intervals": 2,
    "split": "dp",
    "supernet_steps": 2,
    "agent_lr": 0.05,
    "lam": 2.0,
    "agent_steps": 30,
    "allocation": "agent",
    "finetune_steps": 2,
    "lr": 1e-4,
    "finetune_epochs": 0,
    "sampler": "ddim",
    "steps": 50,
}


@pytest.fixture(scope="module")
def context(tmp_path_factory: pytest.TempPathFactory) -> Context:
    data = load_dataset("digits", size=16)
    model = dense_unet()
    out = tmp_path_factory.mktemp("moe")
    return trial_context(model, UNET, data, DiffusionTask(), out, base_flops=count_flops(model, EXAMPLE))


def test_trial_meets_the_average_flops_target_with_figures_and_spec(context: Context) -> None:
    strategy = DiffusionMoEStrategy()
    settings = {name: PARAMS[name] for name in strategy.prepare_params}
    artifacts = strategy.prepare(context, settings)
    candidate = strategy.run(context, PARAMS, artifacts)

    composite = candidate.model
    assert isinstance(composite, CompositeModel) and len(composite.parts) == 2
    boundaries = composite.router.boundaries
    average = average_flops_per_step(composite, boundaries, sampler_timesteps("ddim", 50), EXAMPLE)
    target = context.target_flops(PARAMS)
    assert 0.95 * target <= average <= target
    assert candidate.target_flops == target
    assert context.task.flops(composite, context.data) == round(average)  # the core's convention agrees

    spec = candidate.spec
    assert [tuple(iv) for iv in spec["intervals"]] == list(pairwise(boundaries))
    assert len(spec["configs"]) == 2 and all({"depth", "width"} <= set(c) for c in spec["configs"])
    assert sum(spec["budget_shares"]) == pytest.approx(1.0)
    assert [p.stem.rsplit("_", 1)[0] for p in candidate.figures] == ["similarity", "expert_flops"]
    assert all(p.is_file() and p.stat().st_size > 1000 for p in candidate.figures)
    assert "val_neg_mse" in candidate.metrics


def test_unreachable_budget_fails_before_training(context: Context) -> None:
    strategy = DiffusionMoEStrategy()
    floor = strategy.min_flops(dense_unet(), EXAMPLE)
    assert 0 < floor < 0.2 * context.base_flops
    agent = RoutingAgent([[4.0, 2.0, 1.0], [4.0, 2.0, 1.0]])
    with pytest.raises(BudgetError):
        pick_mixture(agent, [1, 1], 0.5)
    # the cheapest feasible mixture closest to the budget: (2 + 1) / 2 = 1.5 <= 1.5
    assert pick_mixture(agent, [1, 1], 1.5) in ([1, 2], [2, 1])


def test_equal_allocation_gives_every_expert_the_largest_option_under_the_budget() -> None:
    agent = RoutingAgent([[4.0, 2.0, 1.0], [4.0, 2.0, 1.0]])
    assert equal_allocation(agent, [3, 1], 2.5) == [1, 1]
    assert equal_allocation(agent, [3, 1], 4.0) == [0, 0]
    with pytest.raises(BudgetError):
        equal_allocation(agent, [3, 1], 0.5)


def test_ablations_uniform_split_and_equal_allocation(context: Context) -> None:
    strategy = DiffusionMoEStrategy()
    params = {**PARAMS, "split": "uniform", "allocation": "equal", "grid_points": 4, "finetune_steps": 1}
    artifacts = strategy.prepare(context, {name: params[name] for name in strategy.prepare_params})
    assert artifacts["bounds"] == [(0, 2), (2, 4)]
    candidate = strategy.run(context, params, artifacts)
    configs = candidate.spec["configs"]
    assert configs[0] == configs[1] and candidate.spec["allocation"] == "equal"
    assert max(candidate.spec["flops_per_expert"]) <= context.target_flops(params)


def test_space_declares_what_the_strategy_reads() -> None:
    space = load_space(DiffusionMoEStrategy.space)
    assert set(PARAMS) == set(space.params)
    assert space.budget == "target_flops_ratio"
