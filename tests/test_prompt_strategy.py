"""The ``prompt`` strategy end to end on a small conditional UNet: one trial returns a composite of experts
behind the prompt router, at the target mean FLOPs, with its figures and spec; its fine-tuning budget is
shared by the experts; the space declares what the strategy reads."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from automl_prune_prompt.strategy import PromptStrategy, split_steps

from automl_prune.data.registry import load_dataset
from automl_prune.models.base import ModelRef
from automl_prune.pruning import CompositeModel, PromptRouter, save_pruned
from automl_prune.space import load_space
from automl_prune.strategy import Candidate, Context
from automl_prune.text_to_image import generate
from automl_prune.text_to_image.models import TINY, t2i_unet
from automl_prune.text_to_image.task import TextToImageTask
from tests.searches import trial_context

pytest.importorskip("transformers")

CPU = torch.device("cpu")
SMALL = {**TINY, "block_out_channels": (16, 16, 16), "norm_num_groups": 4}
PARAMS = {
    "target_flops_ratio": 0.6,
    "n_codes": 2,
    "balanced": True,
    "router_steps": 40,
    "warmup_steps": 15,
    "router_lr": 0.01,
    "code_lr_scale": 50.0,
    "w_output": 0.2,
    "w_block": 0.2,
    "w_resource": 2.0,
    "w_contrastive": 100.0,
    "w_spread": 0.1,
    "w_max_size": 0.1,
    "w_routing": 1.0,
    "finetune_steps": 4,
    "lr": 1e-4,
    "finetune_epochs": 0,
}


@pytest.fixture(scope="module")
def context(tmp_path_factory: pytest.TempPathFactory) -> Context:
    data = load_dataset("digits-captions", size=16)
    task = replace(TextToImageTask(), fd_samples=8, sample_steps=5)
    torch.manual_seed(0)
    model = t2i_unet(data.info, SMALL).eval()
    out = tmp_path_factory.mktemp("prompt")
    ref = ModelRef("t2i-unet-tiny", {"block_out_channels": [16, 16, 16], "norm_num_groups": 4})
    return trial_context(model, ref, data, task, out)


@pytest.fixture(scope="module")
def candidate(context: Context) -> Candidate:
    return PromptStrategy().run(context, PARAMS, {})


def test_trial_returns_routed_experts_at_the_target_with_figures(context: Context, candidate) -> None:
    composite = candidate.model
    assert isinstance(composite, CompositeModel) and isinstance(composite.router, PromptRouter)
    assert 1 <= len(composite.parts) <= 2
    ratio = context.flops(composite) / context.base_flops  # mean over the routed validation prompts
    assert abs(ratio / 0.6 - 1) <= 0.05, ratio
    spec = candidate.spec
    assert sum(spec["finetune_steps_per_expert"]) == 4
    assert len(spec["flops_ratio_per_expert"]) == len(spec["difficulty_per_expert"]) == len(composite.parts)
    assert sorted(p.name.split("_")[0] for p in candidate.figures) == ["expert", "expert", "prompts"]
    assert all(p.stat().st_size > 0 for p in candidate.figures)
    assert {"val_neg_mse", "test_neg_mse"} <= set(candidate.metrics)
    samples = context.task.generate(composite, context.data, 4, device=context.device)
    assert samples.shape == (4, 1, 16, 16) and bool(samples.isfinite().all())


def test_a_saved_composite_generates_from_free_text_prompts(context: Context, candidate, tmp_path) -> None:
    path = save_pruned(
        candidate.model, tmp_path / "aptp", model_ref=context.model_ref, info=context.data.info
    )
    prompts = ["a bold upright handwritten seven", "a thin left-leaning handwritten one"]
    samples = generate(path, prompts, seed=3)
    assert samples.shape == (2, 1, 16, 16) and bool(samples.isfinite().all())
    again = TextToImageTask().generate_text(candidate.model, prompts, context.data.info, seed=3, device=CPU)
    torch.testing.assert_close(samples, again)  # the loaded composite routes and samples as the trained one


def test_fine_tuning_steps_are_shared_in_proportion_to_the_experts_images() -> None:
    assert split_steps(200, [1000, 500, 55]) == [129, 64, 7]
    assert sum(split_steps(7, [1, 1, 1])) == 7


def test_space_declares_what_the_strategy_reads() -> None:
    space = load_space(PromptStrategy.space)
    assert set(PARAMS) == set(space.params)
    assert space.budget == "target_flops_ratio"
