"""Stage 3: an elastic expert, a weight-sharing supernet of one diffusion UNet (methods/diffusion_moe.md).

One set of weights (a deep copy of the dense UNet) serves every configuration ``ExpertConfig(depth,
width)``; choices the spec leaves open, made here:

- **Width**: one option for the whole UNet, the same share of every channel group's units (GroupNorm
  groups, attention heads), rounded to whole units (half to even, as the toolbox's ``uniform_keep``
  rounds: 0.75 of a 6-unit group keeps 4) and at least one. One option per stage would give
  |widths|^stages configurations (4^7 on the tiny UNet), more than the routing agent's one categorical per
  expert can enumerate and cost; one shared width keeps the option grid at |widths| x |depths|. Within a
  group, units are ordered once, on the dense model, by L1 weight magnitude (torch-pruning's group
  magnitude, summed per unit): data-free, independent of the interval, and fixed while the supernet
  trains, so the order never drifts. Width w keeps the first round(w * units) of that order, so a smaller
  width's channels are a subset of every larger width's (nested, as weight sharing needs). Pass
  ``scores`` (e.g. Taylor importance on the interval's denoising loss) to order otherwise.
- **Depth**: a stage is a down block, the mid block or an up block; its blocks, in forward order, are
  its resnet and attention blocks. Depth d keeps the first d blocks of every stage and skips the rest
  that can be skipped: a block whose output has its input's shape (toolbox ``shape_preserving``). A
  resnet block that changes its channels (every up block's resnets, which take the skip concatenation)
  is never skipped, so a stage may keep more than d blocks. The default depths are 1 up to the longest
  stage (every stage keeps its first block; pass 0 to allow skipping those too). On ``ddpm-unet-tiny``
  depth buys little (depth 1: 95% of the full FLOPs, width 0.5: 26%): its down stages hold one resnet
  each and its up stages' resnets cannot be skipped. Skipping is a forward hook returning the
  block's input (toolbox ``BlockSkips``; diffusers' classes are not edited); an extracted expert holds a
  ``SkippedBlock`` there, which the project's persistence saves and rebuilds.
- **FLOPs** of a configuration: the toolbox's ``GatedFlops`` (fvcore's convention) of the dense UNet with
  that depth's blocks removed, fed the width's keep masks; exact against fvcore on the extracted expert
  (the tests check it). One such model is fitted per depth, on first use, at the supernet's example.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from automl_prune.api import AutomlPruneError, Inputs, noise_scheduler
from automl_prune.pruning import (
    BlockSkips,
    ChannelGates,
    DependencyAnalysis,
    GatedFlops,
    analyze,
    remove_blocks,
    shape_preserving,
    slice_model,
    stage_blocks,
    uniform_keep,
)

WIDTHS = (1.0, 0.75, 0.5, 0.25)
Keep = dict[str, torch.Tensor]


@dataclass(frozen=True, order=True)
class ExpertConfig:
    """One sub-network of the supernet: the share of every channel group kept, and the blocks kept per
    stage (larger values compare larger)."""

    depth: int
    width: float


def magnitude_scores(analysis: DependencyAnalysis) -> dict[str, torch.Tensor]:
    """Per-channel L1 weight magnitude of every group (the default width order, see the module doc)."""
    import torch_pruning as tp  # heavy: loaded on use

    return analysis.importance(tp.importance.GroupMagnitudeImportance(p=1, normalizer=None))


class ElasticUNet(nn.Module):
    """The supernet of ``dense`` (which is copied, never changed), traced at ``example`` (a batch-1 UNet
    input, as ``DiffusionTask.example_input`` gives). Call it as the UNet; ``set_config`` picks the
    sub-network the calls run."""

    def __init__(
        self,
        dense: nn.Module,
        example: Inputs,
        widths: Sequence[float] = WIDTHS,
        depths: Sequence[int] | None = None,
        scores: dict[str, torch.Tensor] | None = None,
    ) -> None:
        super().__init__()
        self.unet = copy.deepcopy(dense)
        self.example = example
        self.analysis = analyze(self.unet, example)
        self.stages = stage_blocks(self.unet)
        self.skippable = shape_preserving(self.unet, example, [b for stage in self.stages for b in stage])
        longest = max(len(stage) for stage in self.stages)
        self.widths = tuple(sorted(set(widths), reverse=True))
        self.depths = tuple(sorted(set(depths or range(1, longest + 1)), reverse=True))
        if not all(0 < w <= 1 for w in self.widths) or not all(0 <= d <= longest for d in self.depths):
            raise AutomlPruneError(
                f"widths must lie in (0, 1] and depths in 0..{longest}; got {widths} and {depths}",
                f"give e.g. widths={WIDTHS} and depths within 0..{longest}",
            )
        scores = scores if scores is not None else magnitude_scores(self.analysis)
        units = {g.key: g.unit for g in self.analysis}
        self._keeps = {w: uniform_keep(scores, units, w) for w in self.widths}
        self._flops: dict[int, tuple[GatedFlops, dict[str, tuple[str, torch.Tensor]]]] = {}
        self.config = self.largest()
        self._attach()

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.unet(*args, **kwargs)

    def keep(self, width: float) -> Keep:
        """The boolean keep mask of every channel group at ``width``."""
        return self._keeps[width]

    def skipped(self, depth: int) -> list[str]:
        """The blocks depth ``depth`` skips: each stage's skippable blocks after its first ``depth``."""
        return [b for stage in self.stages for b in stage[depth:] if b in self.skippable]

    def configs(self) -> list[ExpertConfig]:
        """Every configuration, largest first (the routing agent's options)."""
        return sorted((ExpertConfig(d, w) for d in self.depths for w in self.widths), reverse=True)

    def largest(self) -> ExpertConfig:
        return ExpertConfig(self.depths[0], self.widths[0])

    def smallest(self) -> ExpertConfig:
        return ExpertConfig(self.depths[-1], self.widths[-1])

    def random(self, generator: torch.Generator | None = None) -> ExpertConfig:
        """A configuration drawn uniformly (the sandwich rule's random path)."""
        options = self.configs()
        return options[int(torch.randint(len(options), (1,), generator=generator))]

    def set_config(self, config: ExpertConfig) -> None:
        """Mask the channels and skip the blocks that ``config`` drops, for the calls that follow."""
        if config.width not in self._keeps or config.depth not in self.depths:
            raise AutomlPruneError(
                f"{config} is not a configuration of this supernet",
                f"choose a width in {self.widths} and a depth in {self.depths} (see configs())",
            )
        self._gates.set({k: v.float() for k, v in self.keep(config.width).items()})
        self._skips.set(self.skipped(config.depth))
        self.config = config

    def extract(self, config: ExpertConfig) -> nn.Module:
        """The expert of ``config`` as a physically smaller UNet (a new module, current weights): channels
        sliced, skipped blocks replaced by ``SkippedBlock``; ``save_pruned`` stores it."""
        with self._detached():
            sliced = slice_model(self.unet, self.example, self.keep(config.width), self.analysis)
        return remove_blocks(sliced, self.skipped(config.depth))

    def flops(self, config: ExpertConfig) -> float:
        """FLOPs (fvcore's convention, at the supernet's example input) of ``config``'s expert."""
        model, channels = self._depth_flops(config.depth)
        keep = self.keep(config.width)
        return float(model({key: keep[full][index].double() for key, (full, index) in channels.items()}))

    def _depth_flops(self, depth: int) -> tuple[GatedFlops, dict[str, tuple[str, torch.Tensor]]]:
        """The FLOPs model of the UNet with ``depth``'s blocks removed, and for each of its channel groups
        the supernet's group and channels it is (matched through a shared layer's channel indices)."""
        if depth not in self._flops:
            with self._detached():
                model = remove_blocks(copy.deepcopy(self.unet), self.skipped(depth))
            analysis = analyze(model, self.example)
            where = {
                (m.module, m.side, i): (group.key, c)
                for group in self.analysis
                for m in group.members
                for i, c in zip(m.idxs, m.channels, strict=True)
            }
            channels = {}
            for group in analysis:
                m = next(
                    m
                    for m in group.members
                    if len(m.channels) == group.size and (m.module, m.side, m.idxs[0]) in where
                )
                found = [where[(m.module, m.side, i)] for i in m.idxs]
                order = torch.tensor(m.channels).argsort()
                channels[group.key] = (found[0][0], torch.tensor([c for _, c in found])[order])
            self._flops[depth] = (GatedFlops(model, analysis, self.example), channels)
        return self._flops[depth]

    def _attach(self) -> None:
        self._gates = ChannelGates(self.unet, self.analysis)
        self._skips = BlockSkips(self.unet, self.skippable)
        self.set_config(self.config)

    @contextmanager
    def _detached(self) -> Iterator[None]:
        """The UNet without the supernet's hooks (copying or slicing it would carry them along)."""
        self._gates.remove()
        self._skips.remove()
        try:
            yield
        finally:
            self._attach()


def sandwich_loss(
    supernet: ElasticUNet,
    dense: nn.Module,
    x0: torch.Tensor,
    noise: torch.Tensor,
    timesteps: torch.Tensor,
    configs: Sequence[ExpertConfig],
    scheduler: Any,
    distill: float = 1.0,
) -> torch.Tensor:
    """Mean over ``configs`` of the noise-prediction MSE plus ``distill`` x the MSE to the frozen dense
    model's predicted noise, on ``x0`` noised with ``noise`` at ``timesteps``."""
    noisy = scheduler.add_noise(x0, noise, timesteps)
    with torch.no_grad():
        teacher = dense(noisy, timesteps).sample
    total = x0.new_zeros(())
    for config in configs:
        supernet.set_config(config)
        total = total + distillation_loss(supernet(noisy, timesteps).sample, noise, teacher, distill)
    return total / len(configs)


def distillation_loss(
    predicted: torch.Tensor, noise: torch.Tensor, teacher: torch.Tensor, distill: float
) -> torch.Tensor:
    """The noise-prediction MSE plus ``distill`` x the MSE to the teacher's predicted noise (shared by the
    supernet's sandwich steps and an extracted expert's fine-tuning)."""
    return F.mse_loss(predicted, noise) + distill * F.mse_loss(predicted, teacher)


#: one training step's loss from (x0, noise, timesteps, generator)
StepLoss = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Generator], torch.Tensor]


def train_on_interval(
    model: nn.Module,
    dense: nn.Module,
    images: torch.Tensor,
    interval: tuple[int, int],
    step_loss: StepLoss,
    *,
    steps: int,
    lr: float,
    batch_size: int,
    seed: int,
) -> list[float]:
    """Adam on ``model``'s parameters for ``steps`` steps, each on a batch of ``images`` (in [-1, 1]) with
    seeded noise at timesteps drawn uniformly from ``interval`` = [start, end) only; ``step_loss`` turns
    the batch into the loss. ``dense`` (the teacher) stays in eval mode. Returns each step's loss."""
    start, end = interval
    if not 0 <= start < end:
        raise AutomlPruneError(
            f"an interval of timesteps is [start, end) with 0 <= start < end, got {interval}",
            "pass the interval's boundaries, e.g. (0, 300)",
        )
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    was_training = dense.training
    dense.eval()
    model.train()
    losses = []
    try:
        for _ in range(steps):
            batch = torch.randint(len(images), (batch_size,), generator=generator)
            x0 = images[batch]
            noise = torch.randn(x0.shape, generator=generator).to(x0.device)
            timesteps = torch.randint(start, end, (batch_size,), generator=generator).to(x0.device)
            loss = step_loss(x0, noise, timesteps, generator)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
    finally:
        dense.train(was_training)
    return losses


def train_supernet(
    supernet: ElasticUNet,
    dense: nn.Module,
    images: torch.Tensor,
    interval: tuple[int, int],
    steps: int,
    lr: float = 1e-3,
    batch_size: int = 16,
    distill: float = 1.0,
    seed: int = 0,
) -> list[float]:
    """Train ``supernet`` for ``steps`` Adam steps on ``images`` (in [-1, 1]) at timesteps drawn uniformly
    from ``interval`` = [start, end) only; each step's loss is :func:`sandwich_loss` over the largest, the
    smallest and one random configuration (the sandwich rule: the extremes bound every sub-network).
    ``dense`` is the frozen teacher (eval mode, no gradients). Returns each step's loss; the supernet is
    left at its largest configuration."""
    scheduler = noise_scheduler()

    def step_loss(
        x0: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor, generator: torch.Generator
    ) -> torch.Tensor:
        configs = (supernet.largest(), supernet.smallest(), supernet.random(generator))
        return sandwich_loss(supernet, dense, x0, noise, timesteps, configs, scheduler, distill)

    try:
        return train_on_interval(
            supernet, dense, images, interval, step_loss, steps=steps, lr=lr, batch_size=batch_size, seed=seed
        )
    finally:
        supernet.set_config(supernet.largest())
