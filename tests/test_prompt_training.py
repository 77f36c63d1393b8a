"""APTP's router training and experts on a small conditional UNet: the mean FLOPs ratio reaches its
target, optimal transport keeps the codes in use where argmax routing collapses, experts keep the dense
weights and match the gated UNet, and fine-tuning lowers an expert's loss."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from itertools import cycle

import pytest
import torch
from automl_prune_prompt.experts import extract_experts, finetune_expert, meet_budget
from automl_prune_prompt.gated_unet import GatedUNet
from automl_prune_prompt.training import PromptArchitectures, RouterSettings, train_router
from torch.utils.data import DataLoader, Subset

from automl_prune.data.registry import load_dataset
from automl_prune.progress import Progress
from automl_prune.text_to_image.models import TINY, t2i_unet
from automl_prune.text_to_image.task import TextToImageTask

pytest.importorskip("transformers")

SMALL = {**TINY, "block_out_channels": (16, 16, 16), "norm_num_groups": 4}
QUIET = Progress(quiet=True)


@pytest.fixture(scope="module")
def setup() -> tuple[GatedUNet, list[tuple[torch.Tensor, torch.Tensor]], torch.Tensor]:
    data = load_dataset("digits-captions", size=16)
    task = TextToImageTask()
    torch.manual_seed(0)
    unet = t2i_unet(data.info, SMALL).eval()
    loader = DataLoader(Subset(data.train, range(256)), batch_size=16, shuffle=True)
    cpu = torch.device("cpu")
    batches = [(task.images(b, data, cpu), task.condition(b, data, cpu)[0]) for b in loader]
    val = next(iter(DataLoader(data.val, batch_size=len(data.val))))
    return GatedUNet(unet, task.example_input(data, 1)), batches, task.condition(val, data, cpu)[0]


def endless(batches: list[tuple[torch.Tensor, torch.Tensor]]) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    return iter(cycle(batches))


def routed_counts(batches, architectures) -> torch.Tensor:
    states = torch.cat([s for _, s in batches])
    return torch.bincount(
        architectures.router().parts_of(states), minlength=architectures.codes.weight.shape[0]
    )


def trained(setup, balanced: bool) -> tuple[PromptArchitectures, list[dict[str, float]], torch.Tensor]:
    """A router of 4 codes after 80 steps (30 of warm-up) at target 0.6, and its routing of the batches."""
    gated, batches, _ = setup
    settings = RouterSettings(n_codes=4, steps=80, warmup_steps=30, balanced=balanced)
    architectures, history = train_router(gated, endless(batches), 0.6, settings, seed=0, progress=QUIET)
    return architectures, history, routed_counts(batches, architectures)


@pytest.fixture(scope="module")
def balanced(setup) -> tuple[PromptArchitectures, list[dict[str, float]], torch.Tensor]:
    return trained(setup, balanced=True)


def test_router_training_reaches_the_mean_flops_target_and_validation_prompts_meet_it(
    setup, balanced
) -> None:
    gated, _, val_states = setup
    architectures, history, _ = balanced
    assert history[0]["ratio"] > 0.8  # gates start open but for the Gumbel noise
    assert sum(h["ratio"] for h in history[-10:]) / 10 < 0.7  # on its way to the target
    assert sum(h["resource"] for h in history[-10:]) < sum(h["resource"] for h in history[:10])
    architectures = copy.deepcopy(architectures)  # meet_budget shifts the codes
    assert 0.57 <= meet_budget(architectures, gated, val_states, 0.6) <= 0.6  # captions unseen in training
    codes = architectures.code_gates()
    assert set(codes.unique().tolist()) <= {0.0, 1.0}
    assert bool((codes[:, gated.depth_slice].diff(dim=-1) <= 0).all())  # depth stays ordered
    parts = architectures.router().parts_of(val_states)
    costs = gated.flops(codes).double() / gated.full_flops  # the experts' own count, routed
    assert abs(float(costs[parts].mean()) / 0.6 - 1) <= 0.05


def test_optimal_transport_keeps_codes_in_use_where_argmax_collapses(setup, balanced) -> None:
    _, _, with_ot = balanced
    _, _, without_ot = trained(setup, balanced=False)
    assert int((with_ot > 0).sum()) >= 2, with_ot
    assert int((without_ot > 0).sum()) == 1, without_ot


def test_experts_keep_the_dense_weights_and_match_the_gated_unet(setup, balanced) -> None:
    gated, batches, _ = setup
    architectures, _, _ = balanced
    x0, states = batches[0]
    check = (torch.randn(2, *x0.shape[1:]), torch.tensor([10, 900]), states[:2])
    experts = extract_experts(gated, architectures.code_gates(), check)  # raises if they differ
    dense = dict(gated.unet.named_parameters())
    for expert in experts:
        assert sum(p.numel() for p in expert.parameters()) < sum(p.numel() for p in dense.values())
        for name, weight in expert.named_parameters():
            assert bool(torch.isin(weight, dense[name]).all()), name  # kept weights are the dense ones


def test_finetuning_lowers_an_experts_loss(setup) -> None:
    gated, batches, _ = setup
    code = torch.ones(gated.length)
    code[gated.depth_slice.stop - 1] = 0.0  # the mid block removed
    (expert,) = extract_experts(
        gated, code[None], (torch.randn(1, 1, 16, 16), torch.tensor([5]), batches[0][1][:1])
    )
    losses = finetune_expert(expert, gated.unet, endless(batches[:1]), steps=40, lr=3e-3, seed=0)
    assert sum(losses[-5:]) < sum(losses[:5])
    assert not expert.training
