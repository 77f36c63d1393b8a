"""What a gated or pruned UNet learns from the dense one (methods/prompt.md, "Losses" and "Experts").

One loss serves the router's training (the UNet frozen, its gates learning) and each expert's fine-tuning
(the expert's weights learning): w_d * min-SNR-weighted denoising MSE + w_o * MSE to the dense UNet's
predicted noise + w_b * the mean MSE between the stage outputs (each down block, the mid block, each up
block) of the student and the dense UNet. Stage outputs keep the dense widths (the skip stream is not
pruned) and the stage modules survive block removal, so an expert is compared stage by stage too.

Min-SNR weighting (gamma 5, the paper's value for noise prediction): a timestep's loss is weighted by
min(SNR(t), 5) / SNR(t), so the nearly clean timesteps, whose noise is hard to see and whose loss would
dominate the gradient, count less.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from automl_prune.api import noise_scheduler
from automl_prune.pruning import unet_stages

MIN_SNR_GAMMA = 5.0


@dataclass(frozen=True)
class DistillWeights:
    """Weights of the denoising, output-distillation and block-distillation terms."""

    denoise: float
    output: float
    block: float


def min_snr_weights(timesteps: torch.Tensor, gamma: float = MIN_SNR_GAMMA) -> torch.Tensor:
    """min(SNR(t), gamma) / SNR(t) per timestep, SNR = alpha_bar / (1 - alpha_bar) of the task's schedule."""
    alpha_bar = noise_scheduler().alphas_cumprod.to(timesteps.device)[timesteps]
    snr = alpha_bar / (1 - alpha_bar)
    return snr.clamp(max=gamma) / snr


@contextmanager
def stage_outputs(unet: nn.Module) -> Iterator[list[torch.Tensor]]:
    """Collects each stage's output hidden states, in call order, while the block runs."""
    outputs: list[torch.Tensor] = []

    def keep(_module: nn.Module, _args: object, output: object) -> None:
        outputs.append(output[0] if isinstance(output, tuple) else output)  # down blocks: (hidden, skips)

    handles = [stage.register_forward_hook(keep) for _, stage in unet_stages(unet)]
    try:
        yield outputs
    finally:
        for handle in handles:
            handle.remove()


class Targets(NamedTuple):
    """The dense UNet's predicted noise and stage outputs on one batch."""

    sample: torch.Tensor
    blocks: list[torch.Tensor]


def teach(teacher: nn.Module, noisy: torch.Tensor, timesteps: torch.Tensor, states: torch.Tensor) -> Targets:
    """The dense UNet's targets, without gradient (call it outside any gating of the same UNet)."""
    with torch.no_grad(), stage_outputs(teacher) as blocks:
        sample = teacher(noisy, timesteps, states).sample
    return Targets(sample, blocks)


def distill_loss(
    student: nn.Module,
    targets: Targets,
    noisy: torch.Tensor,
    timesteps: torch.Tensor,
    states: torch.Tensor,
    noise: torch.Tensor,
    weights: DistillWeights,
) -> tuple[torch.Tensor, dict[str, float]]:
    """The weighted loss of ``student`` on one batch and its three terms (floats, for logging)."""
    with stage_outputs(student) as student_blocks:
        predicted = student(noisy, timesteps, states).sample
    per_image = (predicted - noise).square().flatten(1).mean(1)
    denoise = (min_snr_weights(timesteps) * per_image).mean()
    output = F.mse_loss(predicted, targets.sample)
    pairs = [(s, t) for s, t in zip(student_blocks, targets.blocks, strict=True) if s.shape == t.shape]
    block = torch.stack([F.mse_loss(s, t) for s, t in pairs]).mean() if pairs else predicted.new_zeros(())
    loss = weights.denoise * denoise + weights.output * output + weights.block * block
    terms = {"denoise": denoise, "output_kd": output, "block_kd": block}
    return loss, {k: float(v.detach()) for k, v in terms.items()}
