"""The expert routing agent (stage 4 of methods/diffusion_moe.md): how much compute each interval gets.

Expert j (one per interval of timesteps) picks one of its configuration options c (the depth/width
choices of its supernet), each with a known cost FLOPs_j(c) per denoising step. The agent holds one
categorical per expert and samples relaxed one-hot weights w_j with Gumbel-softmax; an expert's expected
cost is F_j = sum_c w_jc FLOPs_j(c). The budget B is on the average FLOPs per sampling step, so the
resource loss is |log((sum_j n_j F_j / sum_j n_j) / B)|, with n_j the number of the sampler's steps
that fall in interval j (the spec writes sum_j n_j F_j / B; dividing by the step count makes B a cost
per step, as the spec defines it). An interval the sampler visits often weighs more: a FLOP saved there
is saved n_j times per sample. The agent's loss adds the experts' distillation losses on their intervals:
sum_j D_j(w_j) + lambda * resource loss, so each interval trades its quality for the shared budget.

Choices the spec leaves open: every expert has the same number of options (the experts are copies of
one UNet with one option grid; their costs may still differ); the logits start at
``preference * FLOPs_j(c) / max_c FLOPs_j(c)``, so the largest option is the argmax (the run starts from
the dense model, as the toolbox's gates start open) while every option is still sampled early
(``preference=1``: the largest is at most e times as likely as any other at temperature 1).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from automl_prune.api import BudgetError
from automl_prune.pruning import TimestepRouter, gumbel_softmax, log_abs


def steps_per_interval(sampler_timesteps: Sequence[int], boundaries: Sequence[int]) -> list[int]:
    """n_j: how many of the sampler's timesteps fall in interval j = [boundaries[j], boundaries[j + 1]).

    Counted by the :class:`TimestepRouter` the composite samples with, so n_j is exactly the number of
    steps expert j serves (a timestep outside the boundaries counts for the nearest end interval).
    """
    router = TimestepRouter(boundaries)
    parts = router.parts_of(torch.tensor(list(sampler_timesteps), dtype=torch.long))
    return torch.bincount(parts, minlength=router.n_parts).tolist()


class RoutingAgent(nn.Module):
    """One categorical per expert over its options, whose FLOPs per step are ``flops[j][c]``."""

    def __init__(self, flops: Sequence[Sequence[float]] | torch.Tensor, preference: float = 1.0) -> None:
        super().__init__()
        table = torch.as_tensor(flops, dtype=torch.get_default_dtype()).clone()  # not the caller's
        if table.dim() != 2 or table.numel() == 0 or not bool((table > 0).all()):
            raise ValueError(
                f"flops must be a non-empty (experts, options) table of positive costs, got {table}"
            )
        self.flops: torch.Tensor
        self.register_buffer("flops", table)
        self.logits = nn.Parameter(preference * table / table.amax(-1, keepdim=True))

    @property
    def n_experts(self) -> int:
        return self.flops.shape[0]

    def forward(
        self, temperature: float, hard: bool = False, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Relaxed one-hot weights (experts, options); ``hard``: one-hot forward, soft gradient."""
        return gumbel_softmax(self.logits, temperature, hard=hard, generator=generator)

    def expected_flops(self, weights: torch.Tensor) -> torch.Tensor:
        """F_j = sum_c w_jc FLOPs_j(c): each expert's cost per step under ``weights``."""
        return (weights * self.flops).sum(-1)

    def average_flops_per_step(self, weights: torch.Tensor, steps: Sequence[int]) -> torch.Tensor:
        """sum_j n_j F_j / sum_j n_j: the mixture's cost per sampling step."""
        counts = torch.as_tensor(steps, dtype=self.flops.dtype, device=self.flops.device)
        if counts.shape != (self.n_experts,) or bool((counts < 0).any()) or counts.sum() <= 0:
            raise ValueError(f"need one non-negative step count per expert, not all 0; got {list(steps)}")
        return (counts * self.expected_flops(weights)).sum() / counts.sum()

    def resource_loss(self, weights: torch.Tensor, steps: Sequence[int], budget: float) -> torch.Tensor:
        """|log(average FLOPs per step / budget)|: pulls the mixture's cost to the budget."""
        return log_abs(self.average_flops_per_step(weights, steps), budget)

    def agent_loss(
        self,
        distill_losses: torch.Tensor,
        weights: torch.Tensor,
        steps: Sequence[int],
        budget: float,
        lam: float,
    ) -> torch.Tensor:
        """sum_j D_j + lam * resource loss; ``distill_losses`` (experts,) is differentiable in ``weights``."""
        if distill_losses.shape != (self.n_experts,):
            raise ValueError(
                f"need one distillation loss per expert, got shape {tuple(distill_losses.shape)}"
            )
        return distill_losses.sum() + lam * self.resource_loss(weights, steps, budget)

    def choice(self) -> list[int]:
        """The most likely option of each expert: the configuration the agent settles on."""
        return self.logits.argmax(-1).tolist()

    def chosen_weights(self) -> torch.Tensor:
        """The one-hot weights of :meth:`choice`, to cost the final mixture with the same formulas."""
        return self._one_hot(self.logits.detach().argmax(-1))

    def check_budget(self, steps: Sequence[int], budget: float) -> None:
        """Raise :class:`BudgetError` when even every expert's smallest option costs more than ``budget``."""
        floor = float(self.average_flops_per_step(self._one_hot(self.flops.argmin(-1)), steps))
        if budget < floor:
            raise BudgetError(
                f"a budget of {budget:.4g} FLOPs per step is below the cheapest mixture ({floor:.4g})",
                f"raise the budget to at least {floor:.4g} FLOPs per step, "
                "or give the experts smaller depth/width options",
            )

    def _one_hot(self, index: torch.Tensor) -> torch.Tensor:
        """Weights that pick option ``index[j]`` for expert j."""
        return torch.zeros_like(self.flops).scatter_(-1, index.unsqueeze(-1), 1.0)
