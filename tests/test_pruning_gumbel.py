"""Gumbel-softmax choices among options and the annealed temperature that cools them."""

from __future__ import annotations

import math
from itertools import pairwise

import pytest
import torch

from automl_prune.pruning import annealed_temperature, gumbel_softmax

LOGITS = torch.tensor([0.0, 1.0, -1.0, 0.5])


def rows(n: int) -> torch.Tensor:
    return LOGITS.expand(n, -1).clone().requires_grad_()


def test_soft_samples_are_distributions_over_the_last_dim() -> None:
    sample = gumbel_softmax(rows(1000), 1.0, generator=torch.Generator().manual_seed(0))
    assert sample.shape == (1000, 4)
    assert torch.allclose(sample.sum(-1), torch.ones(1000)) and bool((sample > 0).all())
    assert sample.std(0).min() > 0.05  # the noise differs between rows


def test_hard_samples_are_the_soft_samples_argmax_one_hot_with_the_soft_gradient() -> None:
    logits, cost = rows(500), torch.tensor([3.0, 1.0, 4.0, 1.5])
    soft = gumbel_softmax(logits, 0.7, generator=torch.Generator().manual_seed(1))
    hard = gumbel_softmax(logits, 0.7, hard=True, generator=torch.Generator().manual_seed(1))
    assert torch.equal(hard, torch.nn.functional.one_hot(soft.argmax(-1), 4).float())  # exactly
    hard_grad = torch.autograd.grad((hard * cost).sum(), logits)[0]
    soft_grad = torch.autograd.grad((soft * cost).sum(), logits)[0]
    assert torch.equal(hard_grad, soft_grad) and soft_grad.abs().sum() > 0


def test_low_temperature_approaches_the_one_hot_of_a_softmax_distributed_choice() -> None:
    logits = rows(20_000).detach()
    cold = gumbel_softmax(logits, 0.02, generator=torch.Generator().manual_seed(2))
    warm = gumbel_softmax(logits, 5.0, generator=torch.Generator().manual_seed(2))
    assert cold.amax(-1).mean() > 0.97 > 0.5 > warm.amax(-1).mean()
    frequency = torch.bincount(cold.argmax(-1), minlength=4) / len(cold)
    assert torch.allclose(frequency, torch.softmax(LOGITS, -1), atol=0.015)  # Gumbel-max trick


def test_the_temperature_decays_exponentially_from_start_to_end_and_stays_there() -> None:
    schedule = [annealed_temperature(step, 100, start=2.0, end=0.02) for step in range(0, 121, 10)]
    assert schedule[0] == pytest.approx(2.0) and schedule[10] == pytest.approx(0.02)
    assert schedule[5] == pytest.approx(math.sqrt(2.0 * 0.02))  # geometric midpoint
    assert all(a > b for a, b in pairwise(schedule[:11]))
    assert schedule[11] == schedule[12] == schedule[10]
    with pytest.raises(ValueError, match="total"):
        annealed_temperature(0, 0)
