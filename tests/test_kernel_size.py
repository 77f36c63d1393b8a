"""Kernel-size NAS: gradients reach the size predictor through the mask, hard sizes are odd and in range,
the built CNN equals the searchable network and has the predicted parameters and fvcore FLOPs, budgets
are met, the search loss falls, and a search leaves a front, loadable models with their sizes, and the
kernel-size figure in MLflow."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import mlflow
import pytest
import torch
import torch.nn.functional as F
from automl_prune_kernel_size.convert import reinitialise, searchable_layers, with_kernel_sizes
from automl_prune_kernel_size.cost import KernelCost
from automl_prune_kernel_size.layers import nearest_odd
from automl_prune_kernel_size.predictor import SearchableCNN
from torch import nn

import automl_prune
from automl_prune.data.base import DataInfo
from automl_prune.errors import BudgetError, ModelError
from automl_prune.flops import count_flops, count_params
from automl_prune.models.base import ModelRef
from automl_prune.models.registry import build_model
from automl_prune.pruning import recalibrate_batchnorm
from automl_prune.search.config import SearchConfig
from automl_prune.search.orchestrator import run_search
from automl_prune.search.setup import Prepared
from tests.searches import small_search

RGB32 = DataInfo("rgb", "classification", in_channels=3, image_size=(32, 32), num_classes=5)
DIGITS = DataInfo("digits", "classification", in_channels=1, image_size=(16, 16), num_classes=10)
MODELS = [
    ("resnet20", {"width": 8}, DIGITS),
    ("plain-cnn", {"widths": [8, 16, 16]}, DIGITS),
    ("resnet18", {}, RGB32),
    ("mobilenet_v2", {"width_mult": 0.25}, RGB32),  # depthwise convs
]
IDS = [name for name, _, _ in MODELS]


def built(name: str, args: dict[str, Any], info: DataInfo) -> nn.Module:
    torch.manual_seed(0)
    return build_model(ModelRef(name, args), info).eval()


def random_sizes(searchable: SearchableCNN, seed: int) -> None:
    """Point the size predictor at random soft sizes across [1, k_max]."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for head in searchable.predictor.generator.heads:
            head.bias.copy_(torch.randn(1, generator=generator) * 3)


@pytest.mark.parametrize(("name", "args", "info"), MODELS, ids=IDS)
def test_searchable_starts_equal_to_the_base(name: str, args: dict[str, Any], info: DataInfo) -> None:
    model = built(name, args, info)
    searchable = SearchableCNN(model, k_max=7, sharpness=4.0).eval()
    x = torch.randn(2, *info.input_shape)
    with torch.no_grad():
        torch.testing.assert_close(searchable(x), model(x), rtol=1e-4, atol=1e-5)
    assert searchable.hard_sizes() == {n: model.get_submodule(n).kernel_size[0] for n in searchable.layers}


@pytest.mark.parametrize("hard", [True, False], ids=["hard-mask", "soft-mask"])
@pytest.mark.parametrize(("name", "args", "info"), MODELS, ids=IDS)
def test_built_cnn_equals_searchable_and_has_the_predicted_cost(
    name: str, args: dict[str, Any], info: DataInfo, hard: bool
) -> None:
    model = built(name, args, info)
    example = torch.zeros(1, *info.input_shape)
    cost = KernelCost.measure(model, searchable_layers(model), example)
    searchable = SearchableCNN(model, k_max=5, sharpness=3.0)
    random_sizes(searchable, seed=1)
    with torch.no_grad():  # kernel predictor away from identity, so the ring gains matter
        for p in searchable.kernels.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    searchable.eval().hard = hard
    sizes = searchable.hard_sizes()
    assert len(set(sizes.values())) > 1  # a mix of sizes, not one everywhere
    plain = searchable.build().eval()
    assert {n: plain.get_submodule(n).kernel_size[0] for n in sizes} == sizes
    x = torch.randn(3, *info.input_shape)
    with torch.no_grad():
        torch.testing.assert_close(plain(x), searchable(x), rtol=1e-4, atol=1e-5)
    assert count_params(plain) == cost.exact(sizes, "params")
    assert count_flops(plain, example) == cost.exact(sizes, "flops")


def test_hard_sizes_are_odd_and_within_range() -> None:
    for k_max in (3, 5, 7, 9):
        for s in torch.linspace(0.5, k_max + 0.5, 97):
            k = nearest_odd(s, k_max)
            assert k % 2 == 1 and 1 <= k <= k_max and abs(k - float(s)) <= 1 + 1e-6 + max(0, float(s) - k_max)
    model = built("resnet20", {"width": 8}, DIGITS)
    searchable = SearchableCNN(model, k_max=7, sharpness=4.0)
    for seed in range(5):
        random_sizes(searchable, seed)
        soft = searchable.soft_sizes()
        assert bool(((soft >= 1) & (soft <= 7)).all())
        assert all(k % 2 == 1 and 1 <= k <= 7 for k in searchable.hard_sizes().values())


def test_size_predictor_gets_gradients_through_the_mask_only() -> None:
    model = built("resnet20", {"width": 8}, DIGITS)
    searchable = SearchableCNN(model, k_max=5, sharpness=4.0).train()
    x, y = torch.randn(4, *DIGITS.input_shape), torch.randint(0, 10, (4,))
    F.cross_entropy(searchable(x), y).backward()
    grads = [p.grad for p in searchable.predictor.parameters()]
    assert all(g is not None for g in grads) and sum(float(g.abs().sum()) for g in grads) > 0
    heads = searchable.predictor.generator.heads
    assert all(float(h.bias.grad.abs()) > 0 for h in heads)  # every layer's size gets a signal
    searchable.zero_grad()
    searchable.hard = True  # no soft mask: no path from the loss to the sizes
    F.cross_entropy(searchable(x), y).backward()
    assert all(p.grad is None or float(p.grad.abs().sum()) == 0 for p in searchable.predictor.parameters())


def test_kernel_predictor_conditions_on_size() -> None:
    model = built("plain-cnn", {"widths": [8, 8, 8]}, DIGITS)
    searchable = SearchableCNN(model, k_max=5, sharpness=4.0)
    gains = searchable.kernels
    sizes = torch.full((len(searchable.layers),), 3.0)
    assert torch.equal(gains(sizes), torch.ones_like(gains(sizes)))  # identity at the start
    with torch.no_grad():
        for p in gains.parameters():
            p.add_(torch.randn_like(p) * 0.5)
    assert not torch.allclose(gains(sizes), gains(sizes + 1.5))


def test_repair_meets_the_budget_by_shrinking_the_least_certain_layer() -> None:
    model = built("resnet20", {"width": 8}, DIGITS)
    layers = searchable_layers(model)
    cost = KernelCost.measure(model, layers, torch.zeros(1, *DIGITS.input_shape))
    sizes = dict.fromkeys(layers, 3)
    soft = torch.full((len(layers),), 3.4)
    soft[5] = 2.1  # barely rounded up to 3
    target = cost.exact(sizes, "params") - 1
    repaired = cost.repair(soft, sizes, target, "params")
    assert cost.exact(repaired, "params") <= target
    assert repaired[layers[5]] == 1 and sum(k != 3 for k in repaired.values()) == 1


def test_no_searchable_conv_is_a_model_error() -> None:
    mlp = nn.Sequential(nn.Conv2d(1, 4, 1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 16 * 16, 10))
    with pytest.raises(ModelError, match="no conv layer") as err:
        SearchableCNN(mlp, k_max=5, sharpness=4.0)
    assert "'same' padding" in err.value.fix


def test_fixed_sizes_and_from_scratch_initialisation() -> None:
    model = built("resnet20", {"width": 8}, DIGITS)
    layers = searchable_layers(model)
    resized = with_kernel_sizes(model, dict.fromkeys(layers, 7))
    x = torch.randn(2, *DIGITS.input_shape)
    with torch.no_grad():  # centre-embedded weights: a 7x7 conv computing the 3x3 one
        torch.testing.assert_close(resized.eval()(x), model(x), rtol=1e-4, atol=1e-5)
    a, b = reinitialise(copy.deepcopy(resized), 3), reinitialise(copy.deepcopy(resized), 3)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))
    assert not torch.equal(a.conv1.weight, resized.conv1.weight)


def test_batchnorm_recalibration_matches_the_data() -> None:
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4))
    data = [(torch.randn(8, 1, 6, 6) * 3 + 2,) for _ in range(4)]
    recalibrate_batchnorm(model, data, torch.device("cpu"))
    with torch.no_grad():
        outputs = torch.cat([model[0](x) for (x,) in data])
    bn = model[1]
    torch.testing.assert_close(bn.running_mean, outputs.mean(dim=(0, 2, 3)), rtol=1e-4, atol=1e-4)
    assert bn.momentum == 0.1 and not model.training


# ---- the strategy on a small prepared search -------------------------------------------------------


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Prepared:
    return small_search(tmp_path_factory.mktemp("kernel_size"), "kernel-size", max_flops="1.0")


def trial(prepared: Prepared, **params: Any) -> automl_prune.Candidate:
    merged = {**prepared.plan.space.defaults(), "search_epochs": 2, "finetune_epochs": 0, **params}
    return prepared.plan.strategy.run(prepared.context, merged, prepared.artifacts)


@pytest.mark.parametrize("kind", ["flops", "params"])
def test_trial_meets_the_budget_and_the_search_loss_falls(prepared: Prepared, kind: str) -> None:
    context = prepared.context
    candidate = trial(prepared, budget_kind=kind, target_ratio=0.5, budget_weight=4.0)
    measured = count_flops(candidate.model, context.example_input(1))
    if kind == "flops":
        assert measured <= candidate.target_flops == pytest.approx(0.5 * context.base_flops)
        assert measured >= 0.4 * context.base_flops  # close to the budget, not far below it
    else:
        target = 0.5 * count_params(context.model)
        assert 0.4 * count_params(context.model) <= count_params(candidate.model) <= target
    assert candidate.metrics["search_ce_last"] < candidate.metrics["search_ce_first"]
    sizes = candidate.spec["kernel_sizes"]
    assert sizes == {n: candidate.model.get_submodule(n).kernel_size[0] for n in sizes}
    assert candidate.figures and candidate.figures[0].read_bytes()[:4] == b"\x89PNG"


def test_final_training_from_cropped_weights_or_from_scratch(prepared: Prepared) -> None:
    cropped = trial(prepared, final_init="cropped")
    scratch = trial(prepared, final_init="scratch")
    assert cropped.spec["kernel_sizes"] == scratch.spec["kernel_sizes"]  # same seed: same search
    # no training: cropped weights keep what the search learnt, a fresh initialisation does not
    assert cropped.quality == cropped.metrics["val_accuracy_after_search"] > 0.5
    assert scratch.quality < 0.5
    trained = trial(prepared, final_init="scratch", finetune_epochs=2, lr=0.05)
    assert trained.quality > scratch.quality


def test_target_below_all_1x1_is_a_budget_error(prepared: Prepared) -> None:
    with pytest.raises(BudgetError, match="1x1") as err:
        trial(prepared, budget_kind="params", target_ratio=0.01)
    assert "target_ratio >=" in err.value.fix


def test_search_saves_sizes_loadable_models_and_the_figure(tmp_path: Path) -> None:
    result = run_search(
        SearchConfig(
            strategy="kernel-size",
            model="plain-cnn",
            model_args={"widths": [8, 16, 16]},
            data="digits",
            out=str(tmp_path / "run"),
            trials=2,
            max_flops="0.7",
            base_epochs=2,
            base_lr=0.1,
            overrides=["search_epochs=1", "finetune_epochs=1"],
            quiet=True,
        )
    )
    assert [t.state for t in result.trials] == ["complete"] * 2, result.trials[0].error
    assert result.front and (tmp_path / "run" / "pareto.csv").exists()
    record = result.trials[0]
    assert record.feasible and record.flops <= record.target_flops
    model = automl_prune.load(record.model_dir)
    spec = json.loads((Path(record.model_dir) / "spec.json").read_text())
    sizes = spec["metadata"]["kernel_sizes"]
    assert sizes == {n: model.get_submodule(n).kernel_size[0] for n in sizes}
    assert count_flops(model, torch.zeros(1, 1, 16, 16)) == record.flops
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'run' / 'mlflow.db'}")
    runs = mlflow.search_runs(search_all_experiments=True, output_format="list")
    logged = [
        a.path
        for run in runs
        for a in mlflow.MlflowClient().list_artifacts(run.info.run_id, "figures")
        if "kernel_sizes" in a.path
    ]
    assert len(logged) == 2
