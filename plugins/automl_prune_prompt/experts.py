"""From trained codes to the deployed composite (methods/prompt.md, "Experts" and "Inference").

Every code that the training prompts are routed to becomes an expert: the dense UNet (its weights loaded
first: the gated UNet is the dense model itself, never changed by the router's training) sliced to the
code's hard gates, its closed depth blocks removed, and refused unless it predicts what the gated dense
UNet predicts. The authors' released code slices a freshly built UNet and loads the weights after, which
leaves pruned layers randomly initialised; slicing the loaded model cannot. Each expert is then
fine-tuned on the images of its own prompts (0.01 denoising + 0.5 output KD + 0.5 block KD, the
spec's weights), and the experts go behind the core's :class:`PromptRouter`, restricted to the used codes.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn

from automl_prune.api import Inputs, noise_scheduler
from automl_prune.pruning import PromptRouter, check_same_outputs
from automl_prune_prompt.distill import DistillWeights, distill_loss, teach
from automl_prune_prompt.gated_unet import GatedUNet
from automl_prune_prompt.training import PromptArchitectures

FINETUNE_WEIGHTS = DistillWeights(denoise=0.01, output=0.5, block=0.5)


def extract_experts(gated: GatedUNet, code_gates: torch.Tensor, check_input: Inputs) -> list[nn.Module]:
    """One sliced expert per row of ``code_gates`` (K, L; 0/1), each checked against the gated dense
    UNet on ``check_input`` (the toolbox's ``SliceMismatchError`` if they differ)."""
    experts = []
    for row in code_gates:
        expert = gated.extract(row).eval()
        batch = len(check_input[0])
        with gated.gated(row.expand(batch, -1)) as masked:
            check_same_outputs(masked, expert, check_input, atol=1e-5, rtol=1e-4)
        experts.append(expert)
    return experts


def finetune_expert(
    expert: nn.Module,
    dense: nn.Module,
    batches: Iterator[tuple[torch.Tensor, torch.Tensor]],
    *,
    steps: int,
    lr: float,
    seed: int,
    weights: DistillWeights = FINETUNE_WEIGHTS,
) -> list[float]:
    """Adam on ``expert``'s weights for ``steps`` batches of its prompts' (x0, caption states), distilled
    from the frozen ``dense`` UNet. Returns each step's loss; the expert is left in eval mode."""
    generator = torch.Generator().manual_seed(seed)
    scheduler = noise_scheduler()
    end = int(scheduler.config.num_train_timesteps)
    optimizer = torch.optim.Adam(expert.requires_grad_(True).parameters(), lr=lr)
    expert.train()
    dense.eval()
    losses = []
    for _ in range(steps):
        x0, states = next(batches)
        noise = torch.randn(x0.shape, generator=generator).to(x0.device)
        t = torch.randint(0, end, (len(x0),), generator=generator).to(x0.device)
        noisy = scheduler.add_noise(x0, noise, t)
        loss, _ = distill_loss(expert, teach(dense, noisy, t, states), noisy, t, states, noise, weights)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    expert.eval()
    return losses


def routed_counts(architectures: PromptArchitectures, states: torch.Tensor) -> torch.Tensor:
    """How many of the prompts with token ``states`` the router sends to each code (K,)."""
    parts = architectures.router().parts_of(states).cpu()
    return torch.bincount(parts, minlength=len(architectures.codes.weight)).double()


def mean_ratio(
    architectures: PromptArchitectures, gated: GatedUNet, counts: torch.Tensor, shift: float | None = None
) -> float:
    """The FLOPs ratio (to the dense UNet) of the experts, weighted by ``counts`` prompts each."""
    costs = gated.flops(architectures.code_gates(shift)).detach().double().cpu()
    return float((counts * costs).sum() / counts.sum()) / gated.full_flops


def routed_ratio(architectures: PromptArchitectures, gated: GatedUNet, states: torch.Tensor) -> float:
    """The mean FLOPs ratio of the experts the prompts with token ``states`` are routed to."""
    return mean_ratio(architectures, gated, routed_counts(architectures, states))


def meet_budget(
    architectures: PromptArchitectures,
    gated: GatedUNet,
    states: torch.Tensor,
    target_ratio: float,
    *,
    iterations: int = 50,
) -> float:
    """Set the codes' ``budget_shift`` (one offset added to every code logit) so that the prompts with
    token ``states``, routed as trained, cost at most ``target_ratio`` of the dense FLOPs on average, as
    close as bisection gets; returns that mean ratio.

    Training meets the target with Gumbel-noisy gates, deployment decides without noise, and the two
    differ where a logit sits near the threshold. One shift for all codes closes (or opens) the gates
    nearest their threshold first and keeps the codes' differences. The router keeps the unshifted codes,
    so the shift resizes experts without moving a prompt to another one (a moving route made the mean a
    step function of the shift, 12% under the target on 8 validation captions).
    """
    counts = routed_counts(architectures, states)

    def ratio_at(shift: float) -> float:
        return mean_ratio(architectures, gated, counts, shift)

    lo = -float(architectures.codes.weight.detach().abs().max()) - 20.0  # all closed; all open at -lo
    hi = -lo
    for _ in range(iterations):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if ratio_at(mid) <= target_ratio else (lo, mid)
    architectures.budget_shift = lo
    return ratio_at(lo)


def used_codes(router: PromptRouter, states: torch.Tensor) -> tuple[list[int], torch.Tensor]:
    """The codes the prompts with token ``states`` are routed to (sorted), and each prompt's code."""
    parts = router.parts_of(states)
    return sorted(parts.unique().tolist()), parts
