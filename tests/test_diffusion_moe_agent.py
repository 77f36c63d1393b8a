"""The diffusion mixture's routing agent: sampler steps per interval, its resource loss and its trade-offs."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from itertools import pairwise

import pytest
import torch
from automl_prune_diffusion_moe.agent import RoutingAgent, steps_per_interval

from automl_prune.api import BudgetError, sampler_timesteps
from automl_prune.pruning import annealed_temperature

SIZES = torch.linspace(0.1, 1.0, 10)  # each option's FLOPs per step as a share of the dense UNet's
BOUNDARIES = [0, 250, 600, 1000]


def optimise(
    agent: RoutingAgent,
    steps: Sequence[int],
    budget: float,
    lam: float,
    distill: Callable[[torch.Tensor], torch.Tensor] | None = None,
    iterations: int = 300,
) -> float:
    """Adam on the agent's loss with an annealed temperature; the chosen mixture's FLOPs per step."""
    optimiser = torch.optim.Adam(agent.parameters(), lr=0.1)
    generator = torch.Generator().manual_seed(0)
    for step in range(iterations):
        weights = agent(annealed_temperature(step, iterations), generator=generator)
        distill_losses = distill(weights) if distill else torch.zeros(agent.n_experts)
        loss = agent.agent_loss(distill_losses, weights, steps, budget, lam)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    return float(agent.average_flops_per_step(agent.chosen_weights(), steps))


def favour_large(weights: torch.Tensor) -> torch.Tensor:
    """A stand-in for each expert's distillation loss: smaller options imitate the dense model worse."""
    return 2 * (weights * (1 - SIZES) ** 2).sum(-1)


@pytest.mark.parametrize(("sampler", "count"), [("ddim", 50), ("ddpm", 1000)])
def test_steps_per_interval_count_the_samplers_timesteps_in_each_interval(sampler: str, count: int) -> None:
    timesteps = sampler_timesteps(sampler, count)
    by_hand = [sum(lo <= t < hi for t in timesteps) for lo, hi in pairwise(BOUNDARIES)]
    assert steps_per_interval(timesteps, BOUNDARIES) == by_hand
    assert sum(by_hand) == count and min(by_hand) > 0
    assert steps_per_interval([0, 249, 250, 999], [0, 250, 1000]) == [2, 2]


def test_the_resource_loss_alone_reaches_every_experts_logits() -> None:
    agent = RoutingAgent(SIZES.expand(3, -1))
    for hard in (False, True):
        agent.zero_grad()
        weights = agent(1.0, hard=hard, generator=torch.Generator().manual_seed(0))
        agent.resource_loss(weights, [13, 17, 20], budget=0.4).backward()
        assert bool((agent.logits.grad.abs().sum(-1) > 0).all())


def test_an_experts_resource_gradient_is_proportional_to_its_sampler_steps() -> None:
    agent = RoutingAgent(SIZES.expand(2, -1))
    weights = torch.softmax(agent.logits, -1)  # no noise: both experts have the same weights
    agent.resource_loss(weights, [40, 10], budget=0.4).backward()
    many, few = agent.logits.grad
    assert torch.allclose(many, 4 * few) and few.abs().sum() > 0


@pytest.mark.parametrize("budget", [0.3, 0.45, 0.62])
def test_the_resource_loss_drives_the_chosen_mixture_to_the_budget(budget: float) -> None:
    fine = torch.linspace(0.1, 1.0, 19)  # options 5% apart, so some mixture is within 5% of any budget
    agent, steps = RoutingAgent(fine.expand(3, -1)), [13, 17, 20]
    assert float(agent.average_flops_per_step(agent.chosen_weights(), steps)) == pytest.approx(1.0)
    assert optimise(agent, steps, budget, lam=1.0) == pytest.approx(budget, rel=0.05)


def test_lambda_trades_the_distillation_loss_against_the_budget() -> None:
    steps = [13, 17, 20]
    loose = optimise(RoutingAgent(SIZES.expand(3, -1)), steps, 0.4, lam=0.1, distill=favour_large)
    strict = optimise(RoutingAgent(SIZES.expand(3, -1)), steps, 0.4, lam=5.0, distill=favour_large)
    assert loose > 1.5 * strict and strict == pytest.approx(0.4, rel=0.1)


def test_the_interval_with_more_sampler_steps_gets_the_smaller_expert() -> None:
    chosen = {}
    for steps in ([40, 10], [25, 25]):
        agent = RoutingAgent(SIZES.expand(2, -1))
        optimise(agent, steps, 0.6, lam=2.0, distill=favour_large, iterations=400)
        chosen[tuple(steps)] = agent.choice()
    many, few = chosen[40, 10]
    assert few - many >= 2  # options apart: the busy interval gives up compute
    even = chosen[25, 25]
    assert abs(even[0] - even[1]) <= 1  # with equal steps neither is pushed harder


def test_a_budget_below_the_cheapest_mixture_is_refused() -> None:
    agent = RoutingAgent([[1.0, 2.0], [3.0, 4.0]])
    agent.check_budget([1, 1], 2.0)
    with pytest.raises(BudgetError, match="at least 2"):
        agent.check_budget([1, 1], 1.9)
