"""The APTP prompt router's math: relaxation, routing embedding, balanced assignment and its losses."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from automl_prune_prompt.router import (
    ArchitectureCodes,
    ArchitecturePredictor,
    contrastive_loss,
    max_size_loss,
    size_spread_loss,
)

from automl_prune.api import SpaceError
from automl_prune.pruning import (
    assign,
    gumbel_sigmoid,
    relax,
    routing_embedding,
    routing_similarity,
    sinkhorn,
)

HEADS = [4, 4, 2, 3]  # two width units, a head unit, then a depth part of 3 blocks
DEPTH = [slice(10, 13)]
WIDTHS = torch.tensor([4] * 8 + [2] * 2 + [1] * 3)


def skewed_scores(n: int = 64, k: int = 4) -> torch.Tensor:
    """Every prompt prefers code 0; the other codes only differ by small per-prompt preferences."""
    scores = 0.3 * torch.rand(n, k, generator=torch.Generator().manual_seed(0))
    scores[:, 0] += 0.5
    return scores


def test_sinkhorn_balances_a_skewed_similarity_that_argmax_collapses() -> None:
    scores = skewed_scores()
    assert assign(scores, balanced=False).unique().tolist() == [0]
    plan = sinkhorn(scores)  # the spec's epsilon 0.05 and 3 iterations
    assert torch.allclose(plan.sum(1), torch.ones(64))
    assert torch.allclose(plan.sum(0), torch.full((4,), 16.0), rtol=0.05)  # soft equipartition
    assert torch.allclose(sinkhorn(scores, iterations=50).sum(0), torch.full((4,), 16.0), rtol=1e-4)
    counts = torch.bincount(assign(scores, balanced=True), minlength=4)
    assert bool((counts >= 8).all()), counts
    assert bool(sinkhorn(scores, epsilon=1e-3).isfinite().all())  # exp(S / eps) would overflow


def test_depth_parts_keep_non_increasing_values_and_width_parts_are_gumbel_sigmoid() -> None:
    logits = 3 * torch.randn(500, 13)
    soft = relax(logits, DEPTH, generator=torch.Generator().manual_seed(1))
    hard = relax(logits, DEPTH, generator=torch.Generator().manual_seed(1), hard=True)
    for gates in (soft, hard):
        assert bool((gates[:, 10:].diff(dim=-1) <= 0).all())
    independent = gumbel_sigmoid(logits, hard=False, generator=torch.Generator().manual_seed(1))
    assert bool((independent[:, 10:].diff(dim=-1) > 0.5).any())  # the same noise, unordered, rises
    assert torch.equal(soft[:, :10], independent[:, :10])
    assert torch.allclose(soft[:, 10:], independent[:, 10:].cumprod(-1))
    assert 0 < hard[:, 12].mean() < hard[:, 10].mean() < 1  # later blocks drop more often


def test_hard_gates_are_zero_one_forward_and_pass_the_soft_gradient_back() -> None:
    logits = torch.randn(32, 13, requires_grad=True)
    hard = relax(logits, DEPTH, hard=True, generator=torch.Generator().manual_seed(2))
    assert set(hard.unique().tolist()) <= {0.0, 1.0} and 0 < hard.mean() < 1
    (hard * torch.arange(1.0, 14.0)).sum().backward()
    assert logits.grad is not None and bool((logits.grad.abs().sum(0) > 0).all())

    gates = torch.rand(8, 13, requires_grad=True)
    embedding = routing_embedding(gates, WIDTHS)
    expected = F.normalize((gates.detach() >= 0.5).float() / WIDTHS.sqrt(), dim=-1)
    assert torch.allclose(embedding, expected)
    embedding[:, 0].sum().backward()
    assert gates.grad is not None and gates.grad.abs().sum() > 0


def test_routing_embeddings_have_unit_norm_and_weigh_each_unit_by_its_width() -> None:
    open_gates = torch.ones(1, 13)
    embedding = routing_embedding(open_gates, WIDTHS)
    assert torch.allclose(embedding.norm(dim=-1), torch.ones(1))
    unit_mass = [embedding[0, part].pow(2).sum() for part in (slice(0, 4), slice(8, 10), slice(10, 11))]
    assert torch.allclose(torch.stack(unit_mass), torch.full((3,), 1 / 6))  # 6 units, equal shares
    gates = relax(torch.randn(20, 13), DEPTH, generator=torch.Generator().manual_seed(3))
    assert torch.allclose(routing_embedding(gates, WIDTHS).norm(dim=-1), torch.ones(20))
    with pytest.raises(ValueError, match="width"):
        routing_embedding(gates, WIDTHS[:-1])


def test_codes_start_orthogonal_and_similarity_compares_routing_embeddings() -> None:
    codes = ArchitectureCodes(5, 13)()
    assert torch.allclose(codes @ codes.T, torch.eye(5), atol=1e-5)
    with pytest.raises(SpaceError, match="orthogonal"):
        ArchitectureCodes(14, 13)
    code_arch = routing_embedding(relax(codes, DEPTH, generator=torch.Generator().manual_seed(4)), WIDTHS)
    similarity = routing_similarity(code_arch[:2], code_arch)
    assert similarity.shape == (2, 5)
    assert torch.allclose(similarity[:, :2].diagonal(), torch.ones(2))


def clustered_prompts() -> torch.Tensor:
    """12 prompts in 3 tight clusters: within a cluster cosines near 1, across clusters near 0."""
    centres = torch.eye(3, 16) * 4
    return centres.repeat_interleave(4, dim=0) + 0.1 * torch.randn(12, 16)


def test_contrastive_loss_prefers_architectures_that_mirror_prompt_similarities() -> None:
    prompts = clustered_prompts()
    mirrored = contrastive_loss(prompts, prompts)
    shuffled = contrastive_loss(
        prompts, prompts[torch.randperm(12, generator=torch.Generator().manual_seed(5))]
    )
    assert mirrored.item() == pytest.approx(0.0, abs=1e-5)
    assert shuffled > 1.0


def test_the_predictor_concatenates_orthogonal_heads() -> None:
    predictor = ArchitecturePredictor(16, HEADS)
    assert predictor.length == 13 and predictor(torch.randn(7, 16)).shape == (7, 13)
    weight = predictor.heads[0].weight
    assert torch.allclose(weight @ weight.T, torch.eye(4), atol=1e-5)


def mean_open(gates: torch.Tensor) -> torch.Tensor:
    """A stand-in for each prompt's FLOPs ratio: the share of its hard gates that are open."""
    return relax(gates, DEPTH, hard=True, generator=torch.Generator().manual_seed(6)).mean(-1)


@pytest.mark.parametrize("size_loss", [size_spread_loss, max_size_loss])
def test_size_losses_reach_the_codes_and_the_predictor(
    size_loss: Callable[[torch.Tensor], torch.Tensor],
) -> None:
    prompts = clustered_prompts()
    predictor, codes = ArchitecturePredictor(16, HEADS), ArchitectureCodes(3, 13)
    prompt_arch = routing_embedding(relax(predictor(prompts), DEPTH), WIDTHS)
    code_arch = routing_embedding(relax(codes(), DEPTH), WIDTHS)
    routed = codes()[assign(routing_similarity(prompt_arch, code_arch), balanced=True)]
    # after the warm-up the routed codes' ratios train the codes; during it, the predictor's own
    (size_loss(mean_open(routed)) + size_loss(mean_open(predictor(prompts)))).backward()
    assert codes.weight.grad is not None and codes.weight.grad.abs().sum() > 0
    assert all(head.weight.grad.abs().sum() > 0 for head in predictor.heads)


def test_the_contrastive_loss_trains_the_predictor_towards_the_prompt_structure() -> None:
    prompts = clustered_prompts()
    predictor = ArchitecturePredictor(16, HEADS)
    loss = contrastive_loss(prompts, routing_embedding(relax(4 * predictor(prompts), DEPTH), WIDTHS))
    loss.backward()
    assert loss > 0 and all(head.weight.grad.abs().sum() > 0 for head in predictor.heads)


def test_size_losses_reward_spread_and_one_large_expert() -> None:
    assert size_spread_loss(torch.tensor([0.5])).item() == 0.0  # a batch of one has a defined spread
    assert size_spread_loss(torch.tensor([0.2, 0.8])) < size_spread_loss(torch.tensor([0.4, 0.6])) < 0
    assert max_size_loss(torch.tensor([0.2, 0.7])).item() == pytest.approx(0.3)
