"""The ``diffusion-moe`` strategy: the stages of methods/diffusion_moe.md joined into one search trial.

``prepare`` (cached per similarity measure, grid, interval count and supernet steps) measures the
timestep similarity on a grid, splits it into intervals and trains one elastic supernet per interval;
its artifacts are plain data and state dicts. ``run`` rebuilds the supernets, trains the routing agent
against the trial's budget, picks each expert's configuration, extracts and fine-tunes the experts on
their intervals and hands the mixture to ``Context.finish`` without the core's fine-tuning: the experts
were fine-tuned on their own intervals (``finetune_steps``), and the core's recipe would train every
expert on every timestep. ``finetune_epochs`` stays in the space at 0 so the shared budget reads honestly.

Choices the spec leaves open, made here:

- **Interval boundaries**: interval (a, b) of the grid serves training timesteps from ``grid[a]`` up to
  the next interval's first grid point; the first starts at 0 and the last ends at the schedule's end.
- **The agent's distillation term**: per expert and option, the distillation loss of the supernet at that
  configuration on one fixed batch at timesteps of its interval, measured once before the agent trains;
  D_j(w_j) = sum_c w_jc D_jc is then the expected loss over the options, differentiable in the agent's
  weights (re-running the supernet in every agent step would cost options x experts UNet calls each).
- **The final configuration**: Gumbel-softmax settles near, not on, the budget (a test saw 7% over), so
  the exact search over the small table of mixtures takes, among those not above the budget and within
  ``BUDGET_SLACK`` of it, the one the agent finds most likely (sum of log-probabilities); when none is that
  close, the feasible mixture of the most FLOPs.
- **Ablations** (the space's ``split`` and ``allocation``, for the benchmark and for users who want the
  simpler variant): ``split: uniform`` cuts the grid into as many equal intervals as the similarity would
  have chosen; ``allocation: equal`` skips the agent and gives every expert the same option, the one of
  the most FLOPs per step not above the budget.
- **Sampler**: ``sampler``/``steps`` count n_j; the core measures the composite's FLOPs per step with the
  diffusion task's own sampler (DDIM, 50 steps), so the space fixes those values by default.
"""

from __future__ import annotations

from itertools import pairwise
from typing import Any

import torch
from torch import nn

from automl_prune.api import Candidate, Context, Inputs, Strategy, builtin_space_path, noise_scheduler
from automl_prune.api import sampler_timesteps as sampler_steps
from automl_prune.pruning import annealed_temperature
from automl_prune_diffusion_moe.agent import RoutingAgent, steps_per_interval
from automl_prune_diffusion_moe.experts import extract_expert, finetune_expert, mixture
from automl_prune_diffusion_moe.figures import budget_bars, similarity_heatmap
from automl_prune_diffusion_moe.intervals import best_intervals, knee_count, uniform_intervals
from automl_prune_diffusion_moe.similarity import activation_cka, gradient_similarity, timestep_grid
from automl_prune_diffusion_moe.supernet import ElasticUNet, ExpertConfig, distillation_loss, train_supernet

#: the experts' width options: 24ths from 1 to 1/4, which round differently on groups of 4, 6, 8 and 12
#: units, so one shared width still reaches costs between the coarse steps eighths give (ddpm-unet-tiny:
#: 0.47 of the FLOPs between 0.57 and 0.33); options of equal cost are merged (:func:`distinct_options`)
WIDTHS = tuple(k / 24 for k in range(24, 5, -1))
#: a final mixture may cost this much less than the budget before the agent's choice gives way to cost
BUDGET_SLACK = 0.05
#: the knee's largest interval count, as the space's choices: the final pick enumerates options^experts
MAX_INTERVALS = 4
SIMILARITY_IMAGES = 32
AGENT_BATCH = 16
SEED = 0


def _train_images(context: Context, n: int) -> torch.Tensor:
    """The first ``n`` training images in the model's range ([-1, 1])."""
    batch = context.first_batch("train", n)
    return context.task.images(batch, context.data, context.device)


def _boundaries(grid: list[int], bounds: list[tuple[int, int]], end: int) -> list[int]:
    """Training-timestep boundaries of the grid intervals ``bounds`` (see the module doc)."""
    return [0, *(grid[a] for a, _ in bounds[1:]), end]


def _supernet(dense: nn.Module, example: Inputs, state: dict[str, torch.Tensor] | None = None) -> ElasticUNet:
    supernet = ElasticUNet(dense, example, widths=WIDTHS)
    if state is not None:
        supernet.unet.load_state_dict(state)
    return supernet


def distinct_options(supernet: ElasticUNet) -> tuple[list[ExpertConfig], list[float]]:
    """The supernet's configurations of distinct FLOPs per step, largest first, with their FLOPs: of
    widths that round to the same channels the largest stands for all (same sub-network, same cost)."""
    options, costs = [], []
    for config in supernet.configs():
        cost = supernet.flops(config)
        if cost not in costs:
            options.append(config)
            costs.append(cost)
    return options, costs


def option_losses(
    supernet: ElasticUNet,
    options: list[ExpertConfig],
    dense: nn.Module,
    images: torch.Tensor,
    interval: tuple[int, int],
    seed: int,
) -> torch.Tensor:
    """D_jc: the distillation loss of ``supernet`` at each of ``options`` on one seeded batch at
    timesteps of ``interval`` (the agent's distillation term, see the module doc)."""
    generator = torch.Generator().manual_seed(seed)
    scheduler = noise_scheduler()
    x0 = images[torch.randint(len(images), (AGENT_BATCH,), generator=generator)]
    noise = torch.randn(x0.shape, generator=generator).to(x0.device)
    t = torch.randint(*interval, (AGENT_BATCH,), generator=generator).to(x0.device)
    noisy = scheduler.add_noise(x0, noise, t)
    losses = []
    with torch.no_grad():
        teacher = dense(noisy, t).sample
        supernet.eval()
        for config in options:
            supernet.set_config(config)
            losses.append(float(distillation_loss(supernet(noisy, t).sample, noise, teacher, 1.0)))
    supernet.set_config(supernet.largest())
    return torch.tensor(losses)


def train_agent(
    agent: RoutingAgent,
    losses: torch.Tensor,
    steps: list[int],
    budget: float,
    *,
    iterations: int,
    lr: float,
    lam: float,
    seed: int,
) -> list[float]:
    """Adam on the agent's logits for ``iterations`` steps of sum_j E_w[D_j] + lam * resource loss, with
    the Gumbel temperature annealed from 1 to 0.1. Returns each step's loss."""
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(agent.parameters(), lr=lr)
    history = []
    for i in range(iterations):
        weights = agent(annealed_temperature(i, iterations), generator=generator)
        loss = agent.agent_loss((weights * losses).sum(-1), weights, steps, budget, lam)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        history.append(float(loss.detach()))
    return history


def pick_mixture(agent: RoutingAgent, steps: list[int], budget: float) -> list[int]:
    """Each expert's option: among the mixtures not above ``budget`` (average FLOPs per step) and within
    ``BUDGET_SLACK`` of it, the most likely under the agent; else the feasible one of the most FLOPs."""
    agent.check_budget(steps, budget)
    n_experts, n_options = agent.flops.shape
    choices = torch.cartesian_prod(*[torch.arange(n_options)] * n_experts).reshape(-1, n_experts)
    rows = torch.arange(n_experts)
    counts = torch.as_tensor(steps, dtype=agent.flops.dtype)
    cost = (agent.flops[rows, choices] * counts).sum(-1) / counts.sum()
    log_prob = agent.logits.detach().log_softmax(-1)[rows, choices].sum(-1)
    feasible = cost <= budget
    close = feasible & (cost >= (1 - BUDGET_SLACK) * budget)
    score = torch.where(close, log_prob, torch.where(feasible, cost - cost.max() - 1e9, -float("inf")))
    return choices[int(score.argmax())].tolist()


def equal_allocation(agent: RoutingAgent, steps: list[int], budget: float) -> list[int]:
    """Each expert's option of the most FLOPs per step not above ``budget``: every interval gets the same
    share of compute per step (the ablation of the agent; the supernets share the dense architecture, so
    their option costs are equal and so is the choice)."""
    agent.check_budget(steps, budget)
    cost = torch.where(agent.flops <= budget, agent.flops, torch.full_like(agent.flops, -1.0))
    return cost.argmax(-1).tolist()


class DiffusionMoEStrategy(Strategy):
    name = "diffusion-moe"
    tasks = ("diffusion",)
    space = builtin_space_path("diffusion_moe")
    description = "timestep-interval experts from elastic supernets, compute allocated by a routing agent"
    prepare_params = ("similarity", "grid_points", "intervals", "split", "supernet_steps")

    def min_flops(self, architecture: nn.Module, example: Inputs) -> float:
        supernet = _supernet(architecture, example)
        return supernet.flops(supernet.smallest())

    def prepare_key(self, context: Context) -> dict[str, Any]:
        """The width options (the supernets' sandwich steps sample them, so other widths retrain) and the
        artifacts' format (they hold the options' FLOPs table)."""
        return {"widths": WIDTHS, "artifacts": "options-table"}

    def prepare(self, context: Context, settings: dict[str, Any]) -> dict[str, Any]:
        model = context.model.eval()
        scheduler = noise_scheduler()
        end = int(scheduler.config.num_train_timesteps)
        grid = timestep_grid(end, int(settings["grid_points"]))
        images = _train_images(context, SIMILARITY_IMAGES)
        measure = gradient_similarity if settings["similarity"] == "gradient" else activation_cka
        S = measure(model, images, grid, scheduler=scheduler, seed=SEED, progress=context.progress)
        n = int(settings["intervals"]) or knee_count(S, MAX_INTERVALS)
        bounds = best_intervals(S, n) if settings["split"] == "dp" else uniform_intervals(len(grid), n)
        boundaries = _boundaries(grid, bounds, end)
        example = context.example_input(1)
        states = []
        for j in context.progress.bar(range(n), f"supernets ({settings['supernet_steps']} steps each)"):
            supernet = _supernet(model, example)
            train_supernet(
                supernet,
                model,
                images,
                (boundaries[j], boundaries[j + 1]),
                steps=int(settings["supernet_steps"]),
                seed=SEED + j,
            )
            states.append({k: v.detach().cpu() for k, v in supernet.unet.state_dict().items()})
        # the supernets differ in weights and channel order, not in channel counts: one FLOPs row serves
        # all, measured once here rather than in every trial (a FLOPs model per depth: seconds each)
        options, costs = distinct_options(supernet)
        return {
            "grid": grid,
            "similarity": S.cpu(),
            "bounds": bounds,
            "boundaries": boundaries,
            "supernets": states,
            "options": [[c.depth, c.width] for c in options],
            "costs": costs,
        }

    def run(self, context: Context, params: dict[str, Any], artifacts: dict[str, Any]) -> Candidate:
        dense = context.model.eval()
        example = context.example_input(1)
        images = _train_images(context, SIMILARITY_IMAGES)
        boundaries = artifacts["boundaries"]
        intervals = list(pairwise(boundaries))
        supernets = [_supernet(dense, example, state) for state in artifacts["supernets"]]
        options = [ExpertConfig(depth, width) for depth, width in artifacts["options"]]
        costs = artifacts["costs"]
        agent = RoutingAgent([costs] * len(supernets))
        sampler = (params["sampler"], int(params["steps"]))
        measured = (getattr(context.task, "sampler", "ddim"), getattr(context.task, "sample_steps", 50))
        if sampler != measured:
            context.progress.log(
                f"diffusion-moe: the budget is spent for {sampler[0]} with {sampler[1]} steps, but the "
                f"search measures FLOPs per step with {measured[0]} with {measured[1]} steps: the front's "
                "FLOPs per step may miss the target (keep the space's sampler/steps at the task's)"
            )
        steps = steps_per_interval(sampler_steps(*sampler), boundaries)
        budget = context.target_flops(params)
        if params["allocation"] == "equal":
            picked = equal_allocation(agent, steps, budget)
        else:
            losses = torch.stack(
                [
                    option_losses(s, options, dense, images, iv, SEED + j)
                    for j, (s, iv) in enumerate(zip(supernets, intervals, strict=True))
                ]
            )
            train_agent(
                agent,
                losses,
                steps,
                budget,
                iterations=int(params["agent_steps"]),
                lr=float(params["agent_lr"]),
                lam=float(params["lam"]),
                seed=context.seed,
            )
            picked = pick_mixture(agent, steps, budget)
        configs = [options[c] for c in picked]
        experts = []
        for j, (supernet, config, interval) in enumerate(zip(supernets, configs, intervals, strict=True)):
            expert = extract_expert(
                supernet, config, check_input=(images[:2], torch.tensor([interval[0]] * 2))
            )
            finetune_expert(
                expert,
                dense,
                images,
                interval,
                steps=int(params["finetune_steps"]),
                lr=float(params["lr"]),
                seed=context.seed + j,
            )
            experts.append(expert)
        flops = [float(agent.flops[j, c]) for j, c in enumerate(picked)]
        spent = [n * f for n, f in zip(steps, flops, strict=True)]
        figures = [
            similarity_heatmap(
                artifacts["similarity"],
                artifacts["grid"],
                artifacts["bounds"],
                context.figure_path("similarity"),
            ),
            budget_bars(flops, spent, intervals, budget, context.figure_path("expert_flops")),
        ]
        spec = {
            "intervals": [list(iv) for iv in intervals],
            "configs": [{"depth": c.depth, "width": c.width} for c in configs],
            "flops_per_expert": flops,
            "steps_per_interval": steps,
            "budget_shares": [s / sum(spent) for s in spent],
            "budget_flops_per_step": budget,
            "split": params["split"],
            "allocation": params["allocation"],
        }
        composite = mixture(experts, boundaries)
        return context.finish(
            composite, params, target_flops=budget, spec=spec, figures=figures, finetune=False
        )
