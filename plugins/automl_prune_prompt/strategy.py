"""The ``prompt`` strategy (APTP, methods/prompt.md): a trial trains the router on the frozen base UNet,
routes the training prompts, slices and fine-tunes one expert per used code and returns the composite.

The budget is the mean FLOPs per guided denoising step over the routed prompts, as a fraction of the
base's (both guidance passes run through the prompt's expert, so the ratio is the same per UNet call).
It is met on the validation prompts, where the search measures a composite's FLOPs (their routing is
what a deployment's prompt mix looks like to the search); the training and test prompts' mean ratios are
recorded in the spec beside it. Routing generalises to unseen prompts only approximately: in a 40-step
test router, the training prompts cost 0.60 of the FLOPs and the validation prompts 0.70.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, Subset

from automl_prune.api import SPLITS, Candidate, Context, Inputs, Strategy, builtin_space_path, split_dataset
from automl_prune.pruning import CompositeModel
from automl_prune_prompt.distill import DistillWeights
from automl_prune_prompt.experts import (
    extract_experts,
    finetune_expert,
    meet_budget,
    routed_ratio,
    used_codes,
)
from automl_prune_prompt.gated_unet import GatedUNet
from automl_prune_prompt.report import difficulty, expert_figures
from automl_prune_prompt.training import RouterSettings, train_router

Batches = Iterator[tuple[torch.Tensor, torch.Tensor]]


def caption_batches(context: Context, dataset: Dataset, *, training: bool, seed: int) -> Batches:
    """Endless shuffled batches of (x0 in [-1, 1], caption token states) of ``dataset``, through the
    task's own hooks (``training``: with its caption dropout, for the unconditional prediction)."""
    generator = torch.Generator().manual_seed(seed)
    loader = DataLoader(dataset, batch_size=context.batch_size, shuffle=True, generator=generator)
    task, data, device = context.task, context.data, context.device
    while True:
        for batch in loader:
            (states,) = task.condition(batch, data, device, training=training)
            yield task.images(batch, data, device), states


def all_states(context: Context, dataset: Dataset) -> torch.Tensor:
    """The caption token states of every item of ``dataset``, in order."""
    task, data, device = context.task, context.data, context.device
    loader = DataLoader(dataset, batch_size=256)
    return torch.cat([task.condition(batch, data, device)[0] for batch in loader])


def split_steps(total: int, counts: list[int]) -> list[int]:
    """``total`` fine-tuning steps shared by the experts in proportion to their training items (largest
    remainders), so K experts together get the fine-tuning one pruned model would."""
    shares = [total * c / sum(counts) for c in counts]
    steps = [int(s) for s in shares]
    for j in sorted(range(len(counts)), key=lambda j: steps[j] - shares[j])[: total - sum(steps)]:
        steps[j] += 1
    return steps


def settings_of(params: dict[str, Any]) -> RouterSettings:
    return RouterSettings(
        n_codes=int(params["n_codes"]),
        steps=int(params["router_steps"]),
        warmup_steps=int(params["warmup_steps"]),
        lr=float(params["router_lr"]),
        code_lr_scale=float(params["code_lr_scale"]),
        balanced=bool(params["balanced"]),
        distill=DistillWeights(1.0, float(params["w_output"]), float(params["w_block"])),
        resource=float(params["w_resource"]),
        contrastive=float(params["w_contrastive"]),
        spread=float(params["w_spread"]),
        max_size=float(params["w_max_size"]),
        routing=float(params["w_routing"]),
    )


class PromptStrategy(Strategy):
    name = "prompt"
    tasks = ("text-to-image",)
    space = builtin_space_path("prompt")
    description = "prompt-routed experts: a router sends each prompt to one of K learned architectures"

    def run(self, context: Context, params: dict[str, Any], artifacts: dict[str, Any]) -> Candidate:
        dense = context.model.eval()
        gated = GatedUNet(dense, context.example_input(1))
        ratio = context.budget_ratio(params)
        architectures, history = train_router(
            gated,
            caption_batches(context, context.data.train, training=False, seed=context.seed),
            ratio,
            settings_of(params),
            seed=context.seed,
            progress=context.progress,
        )
        prompts = {split: all_states(context, split_dataset(context.data, split)) for split in SPLITS}
        meet_budget(architectures, gated, prompts["val"], ratio)
        ratios_by_split = {s: routed_ratio(architectures, gated, prompts[s]) for s in SPLITS}
        used, parts = used_codes(architectures.router(), prompts["train"])
        experts = extract_experts(gated, architectures.code_gates()[used], self._check_input(context))
        counts = [int((parts == c).sum()) for c in used]
        steps = split_steps(int(params["finetune_steps"]), counts)
        for j, (code, expert) in enumerate(
            context.progress.bar(list(zip(used, experts, strict=True)), "experts (fine-tuning)")
        ):
            mine = Subset(context.data.train, torch.nonzero(parts == code).flatten().tolist())
            finetune_expert(
                expert,
                dense,
                caption_batches(context, mine, training=True, seed=context.seed + j),
                steps=steps[j],
                lr=float(params["lr"]),
                seed=context.seed + j,
            )
        composite = CompositeModel(experts, architectures.router(used)).eval()
        flops = [context.flops(e) for e in experts]
        ratios = [f / context.base_flops for f in flops]
        expert_of = torch.tensor([used.index(int(c)) for c in parts])
        hardness = difficulty(context, dense, context.data.train, expert_of, len(used))
        figures = expert_figures(context, experts, composite.router, ratios, counts, hardness, ratio)
        spec = {
            "codes_used": used,
            "train_items_per_expert": counts,
            "finetune_steps_per_expert": steps,
            "flops_per_expert": flops,
            "flops_ratio_per_expert": ratios,
            "difficulty_per_expert": hardness,
            **{f"{s}_prompts_flops_ratio": r for s, r in ratios_by_split.items()},
            "router_final": history[-1] if history else {},
            "balanced": bool(params["balanced"]),
        }
        return context.finish(
            composite,
            params,
            target_flops=context.target_flops(params),
            spec=spec,
            figures=figures,
            finetune=False,
        )

    @staticmethod
    def _check_input(context: Context) -> Inputs:
        sample, t, states = context.example_input(2)
        noise = torch.randn(sample.shape, generator=torch.Generator().manual_seed(0)).to(sample.device)
        return noise, t, states
