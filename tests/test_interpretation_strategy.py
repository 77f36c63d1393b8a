"""ISP's gate search, extraction and trial: the loss falls, the extracted model meets the FLOPs target by
fvcore and equals the masked model, pruned models are explained through the tap scatter, the CE-only
ablation runs, the mask figure is written, and a second search reuses the cached explainer."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from automl_prune_interpretation import InterpretationStrategy
from automl_prune_interpretation.explainer import load_explainer
from automl_prune_interpretation.gate_search import Pairs, search_gates
from automl_prune_interpretation.pruned_explanations import PrunedExplainer, explanation_agreement
from automl_prune_interpretation.tap_groups import groups_from_artifacts

from automl_prune import Candidate
from automl_prune.flops import count_flops
from automl_prune.pruning import GatedFlops, analyze, masked_outputs, repair_to_budget, slice_model
from automl_prune.search.config import SearchConfig
from automl_prune.search.orchestrator import run_search
from automl_prune.search.setup import Prepared
from automl_prune.space import builtin_space_path
from tests.searches import small_search

# A small explainer, so the module's prepare takes seconds: the mechanics are under test, not its quality.
SMALL = {"predictor_epochs": 1, "selector_epochs": 2, "search_epochs": 6}


def small_space(path: Path, **values: Any) -> Path:
    """The built-in space with ``values`` fixed."""
    data = yaml.safe_load(builtin_space_path("interpretation").read_text())
    for name, value in values.items():
        data["params"][name]["value"] = value
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory) -> Prepared:
    out = tmp_path_factory.mktemp("isp")
    space = small_space(out / "space.yaml", **SMALL)
    with pytest.MonkeyPatch.context() as mp:  # the search's space, whose values prepare gets
        mp.setattr(InterpretationStrategy, "space", space)
        return small_search(out, "interpretation")


def trial(prepared: Prepared, **params: Any) -> Candidate:
    merged = {**prepared.plan.space.defaults(), "finetune_epochs": 0, **params}
    return prepared.plan.strategy.run(prepared.context, merged, prepared.artifacts_for(merged))


def test_prepare_stores_pairs_and_explainer(prepared: Prepared) -> None:
    pairs = prepared.artifacts["pairs"]
    n = len(prepared.context.data.train)
    assert len(pairs["labels"]) == min(n, max(round(0.05 * n), 256))
    assert pairs["raw"].shape == (len(pairs["labels"]), 3) and pairs["centre"].shape == (
        len(pairs["labels"]),
        2,
    )
    assert set(prepared.artifacts["explainer_quality"]) >= {"agreement", "deletion_drop", "cross_image_iou"}
    groups = prepared.artifacts["tap_groups"]
    assert groups and all(g["key"] for g in groups.values())  # every ResNet stage tap is carried by a group


def test_gate_search_loss_decreases(prepared: Prepared) -> None:
    context, artifacts = prepared.context, prepared.artifacts
    explainer = load_explainer(artifacts["explainer"], context.model)
    stored = artifacts["pairs"]
    model = copy.deepcopy(context.model).eval()
    example = context.example_input(1)
    analysis = analyze(model, example)
    result = search_gates(
        model,
        analysis,
        GatedFlops(model, analysis, example),
        explainer,
        Pairs(stored["images"], stored["labels"], stored["classes"], stored["raw"]),
        target_ratio=0.4,
        l_int=10.0,
        l_cls=0.0,
        l_res=1.0,
        lr=1e-2,
        epochs=10,
        batch_size=32,
        keep_last=2,
        seed=0,
        device=context.device,
        progress=context.progress,
    )
    losses = [e["loss"] for e in result.losses]
    assert sum(losses[-2:]) < sum(losses[:2]), losses
    assert result.losses[-1]["flops_ratio"] < result.losses[0]["flops_ratio"]
    assert [epoch for epoch, _ in result.logits] == [8, 9]
    assert not any(p.requires_grad for p in model.parameters())  # the classifier stayed frozen


@pytest.mark.parametrize("ratio", [0.3, 0.45])
def test_repair_meets_target_within_five_percent(prepared: Prepared, ratio: float) -> None:
    model = copy.deepcopy(prepared.context.model).eval()
    example = prepared.context.example_input(1)
    analysis = analyze(model, example)
    flops = GatedFlops(model, analysis, example)
    target = ratio * flops.full
    torch.manual_seed(1)
    for shift in (-4.0, 0.0, 4.0):  # generator proposals far under, around and far over the budget
        logits = {g.key: torch.randn(g.size) + shift for g in analysis}
        keep = repair_to_budget(logits, analysis, flops, target)
        measured = count_flops(slice_model(model, example, keep, analysis), example)
        assert 0.95 * target <= measured <= target


def test_trial_meets_target_matches_masked_and_writes_figure(prepared: Prepared) -> None:
    context = prepared.context
    candidate = trial(prepared, target_flops_ratio=0.45)
    example = context.example_input(1)
    flops = count_flops(candidate.model, example)
    target = 0.45 * context.base_flops
    assert candidate.target_flops == pytest.approx(target)
    assert 0.95 * target <= flops <= target
    # with no fine-tuning the candidate is the extracted slice: it must equal the gated base model
    analysis = analyze(context.model, example)
    keep = {k: torch.zeros(analysis[k].size, dtype=torch.bool) for k in candidate.spec["keep"]}
    for key, kept in candidate.spec["keep"].items():
        keep[key][kept] = True
    x = next(iter(context.loader("val")))[0]
    with torch.no_grad():
        assert torch.allclose(
            candidate.model.eval()(x), masked_outputs(context.model, analysis, keep, x), atol=1e-4
        )
    widths = {n: m.out_channels for n, m in candidate.model.named_modules() if hasattr(m, "out_channels")}
    assert all(widths[key] == len(kept) for key, kept in candidate.spec["keep"].items())
    assert {"val_accuracy", "test_accuracy", "val_mask_iou"} <= set(candidate.metrics)
    assert 0.0 <= candidate.metrics["val_mask_iou"] <= 1.0
    (figure,) = candidate.figures
    assert figure.is_file() and figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert context.run_dir in figure.parents


def test_ce_only_ablation_runs(prepared: Prepared) -> None:
    candidate = trial(prepared, target_flops_ratio=0.5, l_int=0.0, l_cls=1.0, finetune_epochs=1)
    flops = count_flops(candidate.model, prepared.context.example_input(1))
    assert flops <= 0.5 * prepared.context.base_flops
    assert candidate.quality > 0.1  # one fine-tuning epoch beats chance on 10 classes


def test_pixel_selector_ablation_prepares_its_own_explainer(prepared: Prepared) -> None:
    """``kind=pixel`` differs from the prepared (rbf) artifacts: the trial prepares a pixel explainer
    through the same cache and matches mask logits instead of RBF parameters."""
    candidate = trial(prepared, kind="pixel", target_flops_ratio=0.5)
    assert candidate.spec["isp"]["explainer_kind"] == "pixel"
    assert (
        count_flops(candidate.model, prepared.context.example_input(1)) <= 0.5 * prepared.context.base_flops
    )
    assert 0.0 <= candidate.metrics["val_mask_iou"] <= 1.0


def test_pruned_model_is_explained_like_the_masked_one(prepared: Prepared) -> None:
    """The tap scatter: a sliced model (keep masks as a magnitude baseline stores them, index lists)
    gets exactly the explanation of the base model with those channels gated off."""
    context, artifacts = prepared.context, prepared.artifacts
    explainer = load_explainer(artifacts["explainer"], context.model)
    example = context.example_input(1)
    base = copy.deepcopy(context.model).eval()
    analysis = analyze(base, example)
    torch.manual_seed(2)
    masks = {g.key: torch.rand(g.size) < 0.6 for g in analysis}
    for m in masks.values():
        m[0] = True
    sliced = slice_model(base, example, masks, analysis).eval()
    spec_keep = {k: m.nonzero().flatten().tolist() for k, m in masks.items()}
    pruned = PrunedExplainer(explainer, groups_from_artifacts(artifacts["tap_groups"]), analysis, spec_keep)
    x, y = next(iter(context.loader("val")))
    from automl_prune.pruning import ChannelGates

    with torch.no_grad():
        raw_sliced, logits_sliced = pruned.outputs(sliced, x, y)
        with ChannelGates(base, analysis) as gates:
            gates.set({k: m.float() for k, m in masks.items()})
            raw_masked, logits_masked = explainer.outputs(base, x, y)
    assert torch.allclose(logits_sliced, logits_masked, atol=1e-4)
    assert torch.allclose(raw_sliced, raw_masked, atol=1e-4)


def test_magnitude_baseline_is_explained_from_its_spec(prepared: Prepared) -> None:
    from automl_prune_magnitude import MagnitudeStrategy

    context = prepared.context
    params = {
        "target_flops_ratio": 0.5,
        "criterion": "l1",
        "scope": "global",
        "lr": 0.02,
        "finetune_epochs": 0,
        "distill": False,
    }
    candidate = MagnitudeStrategy().run(context, params, {})
    iou = explanation_agreement(context, prepared.artifacts, candidate.model, candidate.spec["keep"])
    assert 0.0 <= iou <= 1.0


def test_second_search_reuses_the_explainer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import automl_prune_interpretation.explainer as explainer_module

    calls = []
    real = explainer_module.build_explainer
    monkeypatch.setattr(explainer_module, "build_explainer", lambda *a, **k: calls.append(1) or real(*a, **k))
    space = small_space(
        tmp_path / "space.yaml", **{**SMALL, "search_epochs": 2, "min_pairs": 64}
    )  # own prepare
    monkeypatch.setattr(InterpretationStrategy, "space", space)
    for name in ("first", "second"):
        result = run_search(
            SearchConfig(
                strategy="interpretation",
                model="resnet20",
                model_args={"width": 8},
                data="digits",
                out=str(tmp_path / name),
                trials=1,
                max_flops="0.6",
                base_epochs=3,
                base_lr=0.1,
                overrides=["finetune_epochs=0"],
                quiet=True,
            )
        )
        assert [t.state for t in result.trials] == ["complete"], result.trials[0].error
    assert len(calls) == 1
