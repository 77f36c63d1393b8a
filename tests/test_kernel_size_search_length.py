"""Kernel-size search length: the search runs the steps it is given (fractions of an epoch included),
and the stop rule ends it once the repaired sizes hold still, never before its minimum."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from automl_prune_kernel_size.convert import kernel_sizes, searchable_layers
from automl_prune_kernel_size.cost import KernelCost
from automl_prune_kernel_size.predictor import SearchableCNN
from automl_prune_kernel_size.search import SizeSearchResult, StopRule, search_sizes
from torch.utils.data import DataLoader, Dataset

import automl_prune
from automl_prune.api import Progress
from automl_prune.data.base import DataInfo
from automl_prune.models.base import ModelRef
from automl_prune.models.registry import build_model
from automl_prune.search.setup import Prepared
from tests.searches import small_search

DIGITS = DataInfo("digits", "classification", in_channels=1, image_size=(16, 16), num_classes=10)
BATCH, BATCHES = 4, 5  # one epoch of the tiny loader


class Counted(Dataset):
    """Random digits-shaped images that count how many times they were read."""

    def __init__(self, n: int) -> None:
        generator = torch.Generator().manual_seed(0)
        self.x = torch.randn(n, *DIGITS.input_shape, generator=generator)
        self.y = torch.randint(0, 10, (n,), generator=generator)
        self.reads = 0

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        self.reads += 1
        return self.x[i], self.y[i]


def tiny_search(
    steps: int, stop: StopRule | None, size_lr: float, data: Counted | None = None
) -> SizeSearchResult:
    torch.manual_seed(0)
    model = build_model(ModelRef("plain-cnn", {"widths": [4, 8]}), DIGITS)
    layers = searchable_layers(model)
    cost = KernelCost.measure(model, layers, torch.zeros(1, *DIGITS.input_shape))
    loader = DataLoader(Counted(BATCH * BATCHES) if data is None else data, batch_size=BATCH, shuffle=True)
    return search_sizes(
        SearchableCNN(model, k_max=5, sharpness=4.0),
        cost,
        loader,
        target=float(cost.exact(kernel_sizes(model, layers), "params")),
        kind="params",
        steps=steps,
        stop=stop,
        lr=0.01,
        size_lr=size_lr,
        budget_weight=1.0,
        budget_loss="abs",
        device=torch.device("cpu"),
        progress=Progress(quiet=True),
    )


def test_the_search_runs_exactly_its_steps_across_epochs() -> None:
    data = Counted(BATCH * BATCHES)
    result = tiny_search(12, None, size_lr=0.05, data=data)  # 2.4 epochs of 5 batches
    assert result.steps == 12 and not result.stopped_early
    assert data.reads == 12 * BATCH
    assert [h["step"] for h in result.history] == [5, 10, 12]  # one point per epoch, the last partial


def test_the_stop_rule_stops_once_the_sizes_hold_still_after_its_minimum() -> None:
    still = 0.0  # no size lr: the sizes never move
    assert tiny_search(40, StopRule(every=2, patience=2, min_steps=0), still).steps == 6  # checks 2, 4, 6
    late = tiny_search(40, StopRule(every=2, patience=2, min_steps=13), still)
    assert late.steps == 14 and late.stopped_early  # the first check at or after the minimum
    assert tiny_search(40, StopRule(every=2, patience=30, min_steps=0), still).steps == 40  # too patient


def test_the_stop_rule_needs_unchanged_checks_and_the_minimum() -> None:
    rule = StopRule(every=4, patience=3, min_steps=16)
    assert rule.settled(16, 3) and rule.settled(40, 5)
    assert not rule.settled(12, 3)  # before the minimum
    assert not rule.settled(20, 2)  # a size changed two checks ago


# ---- through the strategy ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Prepared:
    return small_search(tmp_path_factory.mktemp("kernel_size_length"), "kernel-size", max_flops="1.0")


def trial(prepared: Prepared, **params: Any) -> automl_prune.Candidate:
    merged = {**prepared.plan.space.defaults(), "finetune_epochs": 0, "final_init": "scratch", **params}
    return prepared.plan.strategy.run(prepared.context, merged, prepared.artifacts)


def test_fractional_search_epochs_and_the_stop_are_recorded(prepared: Prepared) -> None:
    per_epoch = len(prepared.context.loader("train"))
    half = trial(prepared, search_epochs=0.5, stop_every=0)
    assert half.metrics["search_steps"] == round(0.5 * per_epoch)
    assert half.metrics["search_stopped_early"] == 0
    assert "val_accuracy_after_search" not in half.metrics  # from scratch: the searched weights are dropped
    stopped = trial(prepared, search_epochs=2, size_lr=0.0, stop_every=1, stop_patience=2, stop_min_epochs=0)
    assert stopped.metrics["search_steps"] == 3 and stopped.metrics["search_stopped_early"] == 1
    assert stopped.metrics["search_seconds"] > 0
