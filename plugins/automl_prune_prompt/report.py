"""What a trial shows about its experts: which prompts each serves, how large each is against how hard its
prompts are for the dense UNet, and what each generates (methods/prompt.md, "What to show").

Difficulty is the dense UNet's denoising MSE on an expert's training images at fixed (noise, timestep)
pairs: the loss the router's resource term trades against. "Harder prompt groups get larger experts"
then reads as a positive rank correlation between the experts' difficulty and their FLOPs ratios.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from automl_prune.api import SPLITS, Context, noise_scheduler, split_dataset
from automl_prune.pruning import PromptRouter
from automl_prune_prompt.figures import expert_samples, expert_sizes, prompts_by_expert

SAMPLES_PER_EXPERT = 6


def caption_table(context: Context) -> tuple[torch.Tensor, torch.Tensor, set[int]]:
    """Every caption id the splits use (sorted), its token states, and the ids seen in training."""
    task, data, device = context.task, context.data, context.device
    states: dict[int, torch.Tensor] = {}
    seen: set[int] = set()
    for split in SPLITS:
        for batch in DataLoader(split_dataset(data, split), batch_size=256):
            ids = batch[1].tolist()
            rows = task.condition(batch, data, device)[0]
            states.update({i: row for i, row in zip(ids, rows, strict=True) if i not in states})
            if split == "train":
                seen.update(ids)
    ids = sorted(states)
    return torch.tensor(ids), torch.stack([states[i] for i in ids]), seen


def difficulty(
    context: Context, dense: nn.Module, dataset: Dataset, parts: torch.Tensor, n: int
) -> list[float]:
    """The dense UNet's mean denoising MSE on each of the ``n`` experts' items of ``dataset`` (``parts``:
    each item's expert), at (noise, timestep) pairs drawn from a fixed seed."""
    task, data, device = context.task, context.data, context.device
    generator = torch.Generator().manual_seed(0)
    end = int(noise_scheduler().config.num_train_timesteps)
    errors = []
    with torch.no_grad():
        for batch in DataLoader(dataset, batch_size=256):
            x0 = task.images(batch, data, device)
            t = torch.randint(0, end, (len(x0),), generator=generator).to(device)
            noise = torch.randn(x0.shape, generator=generator).to(device)
            errors.append(task.denoising_loss(dense, x0, t, noise, task.condition(batch, data, device)).cpu())
    error = torch.cat(errors)
    return [float(error[parts == j].mean()) if (parts == j).any() else float("nan") for j in range(n)]


def expert_figures(
    context: Context,
    experts: list[nn.Module],
    router: PromptRouter,
    ratios: list[float],
    counts: list[int],
    hardness: list[float],
    target: float,
) -> list[Path]:
    """Prompts by expert (every caption, held-out ones marked), expert sizes against difficulty, and a
    row of guided samples per expert for captions routed to it."""
    ids, states, seen = caption_table(context)
    parts = router.parts_of(states).cpu()
    captions = context.data.info.extra["captions"]
    rows = []
    for j, expert in enumerate(experts):
        mine = ids[parts == j][:SAMPLES_PER_EXPERT]
        if len(mine):
            images = context.task.generate_for(expert, context.data, mine, device=context.device)
            rows.append((f"expert {j} ({ratios[j]:.2f})", images))
    return [
        prompts_by_expert(
            [captions[i] for i in ids.tolist()],
            parts.tolist(),
            ratios,
            context.figure_path("prompts_by_expert"),
            held_out={k for k, i in enumerate(ids.tolist()) if i not in seen},
        ),
        expert_sizes(ratios, counts, hardness, target, context.figure_path("expert_sizes")),
        expert_samples(rows, context.figure_path("expert_samples"), title="guided samples, per expert"),
    ]
