"""Stage 5 of methods/diffusion_moe.md: extract each interval's expert, fine-tune it, join them by timestep.

An expert is its supernet's sub-network at the configuration the routing agent chose, sliced into a
physically smaller UNet (:meth:`ElasticUNet.extract`) and checked against the masked supernet, so the
FLOPs the agent paid for are the FLOPs the expert costs. Fine-tuning then lets the sliced weights, no
longer shared with other configurations, fit their interval alone, with the same loss as the supernet's
sandwich steps (noise-prediction MSE + distillation from the frozen dense UNet). The mixture is a core
:class:`CompositeModel` behind a :class:`TimestepRouter`: every sampling step's batch shares one timestep
and runs exactly one expert, so its cost per sampling run is the sum over intervals of n_j x FLOPs_j.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from automl_prune.api import Inputs, ModelError, count_flops, noise_scheduler
from automl_prune.pruning import CompositeModel, TimestepRouter, check_same_outputs
from automl_prune_diffusion_moe.agent import steps_per_interval
from automl_prune_diffusion_moe.supernet import (
    ElasticUNet,
    ExpertConfig,
    distillation_loss,
    train_on_interval,
)


def extract_expert(
    supernet: ElasticUNet,
    config: ExpertConfig,
    *,
    check_input: Inputs,
    rtol: float = 1e-4,
    atol: float = 1e-5,
) -> nn.Module:
    """``config``'s expert as a sliced UNet (eval mode), refused with the toolbox's
    ``SliceMismatchError`` unless it predicts what the masked supernet predicts on ``check_input`` (a
    batch of UNet arguments, e.g. ``(x, timesteps)``) within ``rtol``/``atol``: a slicing that drops a
    channel the masks keep would otherwise cost the mixture quality silently. The supernet is left at the
    configuration and mode it had."""
    previous = supernet.config
    expert = supernet.extract(config).eval()
    try:
        supernet.set_config(config)
        check_same_outputs(supernet, expert, check_input, atol=atol, rtol=rtol)
    finally:
        supernet.set_config(previous)
    return expert


def finetune_expert(
    expert: nn.Module,
    dense: nn.Module,
    images: torch.Tensor,
    interval: tuple[int, int],
    *,
    steps: int,
    lr: float = 1e-4,
    batch_size: int = 16,
    distill: float = 1.0,
    seed: int = 0,
) -> list[float]:
    """Fine-tune ``expert`` in place for ``steps`` Adam steps on ``images`` (in [-1, 1]) at timesteps of
    ``interval`` = [start, end) only: noise-prediction MSE + ``distill`` x the MSE to the frozen
    ``dense`` model's predicted noise. Returns each step's loss; the expert is left in eval mode."""
    scheduler = noise_scheduler()

    def step_loss(
        x0: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor, generator: torch.Generator
    ) -> torch.Tensor:
        noisy = scheduler.add_noise(x0, noise, timesteps)
        with torch.no_grad():
            teacher = dense(noisy, timesteps).sample
        return distillation_loss(expert(noisy, timesteps).sample, noise, teacher, distill)

    try:
        return train_on_interval(
            expert, dense, images, interval, step_loss, steps=steps, lr=lr, batch_size=batch_size, seed=seed
        )
    finally:
        expert.eval()


def mixture(experts: Sequence[nn.Module], boundaries: Sequence[int]) -> CompositeModel:
    """The experts behind a timestep router: expert j serves [boundaries[j], boundaries[j + 1])."""
    _check_one_per_interval(len(experts), boundaries)
    return CompositeModel(list(experts), TimestepRouter(boundaries)).eval()


def average_flops_per_step(
    experts: CompositeModel | Sequence[nn.Module],
    boundaries: Sequence[int],
    sampler_timesteps: Sequence[int],
    example: Inputs,
) -> float:
    """sum_j n_j FLOPs_j / sum_j n_j: fvcore's FLOPs of each sliced expert at ``example`` (batch 1),
    weighted by n_j, the number of the sampler's timesteps in its interval (what the router sends it)."""
    parts = list(experts.parts) if isinstance(experts, CompositeModel) else list(experts)
    _check_one_per_interval(len(parts), boundaries)
    counts = steps_per_interval(sampler_timesteps, boundaries)
    total = sum(n * count_flops(part, example) for n, part in zip(counts, parts, strict=True) if n)
    return total / sum(counts)


def _check_one_per_interval(n_experts: int, boundaries: Sequence[int]) -> None:
    if n_experts != len(boundaries) - 1:
        raise ModelError(
            f"{n_experts} experts for {len(boundaries) - 1} intervals (boundaries {list(boundaries)})",
            "give one expert per interval: len(boundaries) == number of experts + 1",
        )
