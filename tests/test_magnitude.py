"""Magnitude baseline: every criterion and scope meets the FLOPs target by fvcore; fine-tuning helps."""

from __future__ import annotations

from pathlib import Path

import pytest

import automl_prune
from automl_prune.flops import count_flops
from automl_prune.search.setup import Prepared
from tests.searches import small_search


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Prepared:
    return small_search(tmp_path_factory.mktemp("magnitude"), "magnitude")


@pytest.mark.parametrize(
    ("criterion", "scope"), [("l1", "global"), ("l2", "uniform"), ("taylor", "global"), ("random", "uniform")]
)
def test_pruned_model_meets_target_by_fvcore(prepared: Prepared, criterion: str, scope: str) -> None:
    context = prepared.context
    params = {
        **prepared.plan.space.defaults(),
        "criterion": criterion,
        "scope": scope,
        "target_flops_ratio": 0.45,
        "finetune_epochs": 1,
    }
    candidate = prepared.plan.strategy.run(context, params, prepared.artifacts)
    flops = count_flops(candidate.model, context.example_input(1))
    assert flops <= candidate.target_flops == pytest.approx(0.45 * context.base_flops)
    assert flops >= 0.40 * context.base_flops  # close to the target, not far below it
    assert sum(p.numel() for p in candidate.model.parameters()) < sum(
        p.numel() for p in context.model.parameters()
    )
    assert 0.0 <= candidate.quality <= 1.0 and "test_accuracy" in candidate.metrics
    widths = {
        name: m.out_channels for name, m in candidate.model.named_modules() if hasattr(m, "out_channels")
    }
    for key, kept in candidate.spec["keep"].items():  # the recorded keep masks are the sliced widths
        assert widths[key] == len(kept)


def test_fine_tuning_recovers_accuracy(prepared: Prepared) -> None:
    context = prepared.context
    params = {**prepared.plan.space.defaults(), "criterion": "l1", "target_flops_ratio": 0.3, "lr": 0.05}
    without = prepared.plan.strategy.run(context, {**params, "finetune_epochs": 0}, prepared.artifacts)
    tuned = prepared.plan.strategy.run(context, {**params, "finetune_epochs": 3}, prepared.artifacts)
    assert tuned.quality > without.quality


def test_min_flops_is_what_slicing_reaches(prepared: Prepared, tmp_path: Path) -> None:
    context = prepared.context
    smallest = prepared.plan.strategy.min_flops(context.model, context.example_input(1))
    params = {**prepared.plan.space.defaults(), "target_flops_ratio": 1e-6, "finetune_epochs": 0}
    candidate = prepared.plan.strategy.run(context, params, prepared.artifacts)
    assert count_flops(candidate.model, context.example_input(1)) == smallest
    from automl_prune.pruning import save_pruned

    path = save_pruned(candidate.model, tmp_path / "m", model_ref=context.model_ref, info=context.data.info)
    assert count_flops(automl_prune.load(path), context.example_input(1)) == smallest


def test_channel_multiple_keeps_widths_a_vectorised_kernel_runs_fast(prepared: Prepared) -> None:
    context = prepared.context
    params = {**prepared.plan.space.defaults(), "target_flops_ratio": 0.7, "finetune_epochs": 0}
    widths = {}
    for multiple in (1, 8):
        candidate = prepared.plan.strategy.run(context, {**params, "channel_multiple": multiple}, {})
        assert count_flops(candidate.model, context.example_input(1)) <= candidate.target_flops
        widths[multiple] = [len(kept) for kept in candidate.spec["keep"].values()]
    assert all(w % 8 == 0 for w in widths[8]) and any(w % 8 for w in widths[1])
