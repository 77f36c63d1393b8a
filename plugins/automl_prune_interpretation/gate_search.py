"""Stage 5 of ISP: learn channel gates whose explanations match the original model's (the gate search).

An :class:`~automl_prune.pruning.ArchitectureGenerator` proposes logits for every prunable channel group
of a frozen copy of the base model (eval mode, so BatchNorm statistics stay fixed); hard Gumbel-sigmoid
gates (T = 0.4, offset 3, straight-through) are sampled once per batch of pruning pairs and applied with
:class:`~automl_prune.pruning.ChannelGates`. The loss per batch is

    l_int * MSE(explanation of the gated model, stored explanation of the original)
  + l_cls * CE(gated logits, labels)
  + l_res * log(max(F(hard gates) / F_base, p) / p)

where the explanation is the RBF selector's raw parameters (p_x, p_y, p_s), or the per-pixel mask
logits for the pixel-selector ablation, and F is :class:`~automl_prune.pruning.GatedFlops` (exact
against fvcore for 0/1 gates). Only the generator is trained (AdamW); the classifier, its BatchNorm
statistics, and the explainer are frozen. Every epoch ends by recording the generator's current logits,
the raw material of the extraction (stage 6, ``automl_prune.pruning.extraction``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from automl_prune.api import Progress
from automl_prune.pruning import (
    OFFSET,
    TEMPERATURE,
    ArchitectureGenerator,
    ChannelGates,
    DependencyAnalysis,
    GatedFlops,
    log_hinge,
)


@dataclass
class Pairs:
    """Pruning pairs: images, true labels, the class explained, and the original's explanation of it.

    ``classes`` is the original model's prediction (the selector explains the model's decision, as it
    was trained to); ``labels`` are the true labels, for the optional cross-entropy term. ``targets`` is
    the RBF head's raw parameters ``[N, 3]`` or, for the pixel selector, mask logits ``[N, 1, H, W]``:
    whatever ``Explainer.outputs`` returns first.
    """

    images: torch.Tensor
    labels: torch.Tensor
    classes: torch.Tensor
    targets: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)


@dataclass
class GateSearchResult:
    """Per-epoch mean losses, and the generator's per-channel logits after each of the last epochs."""

    losses: list[dict[str, float]]
    logits: list[tuple[int, dict[str, torch.Tensor]]] = field(default_factory=list)
    generator: ArchitectureGenerator | None = None


def freeze(module: nn.Module) -> nn.Module:
    """Eval mode (BatchNorm statistics fixed) and no parameter gradients."""
    module.eval()
    for p in module.parameters():
        p.requires_grad_(False)
    return module


def search_gates(
    model: nn.Module,
    analysis: DependencyAnalysis,
    flops: GatedFlops,
    explainer: object,
    pairs: Pairs,
    *,
    target_ratio: float,
    l_int: float,
    l_cls: float,
    l_res: float,
    lr: float,
    epochs: int,
    batch_size: int,
    keep_last: int,
    seed: int,
    device: torch.device,
    progress: Progress,
    hidden: int = 64,
) -> GateSearchResult:
    """Train an architecture generator on ``model`` (frozen here; gates are hooked on it and removed).

    ``explainer`` is an ``Explainer`` whose ``outputs(model, x, labels)`` returns (explanation, logits)
    with gradients flowing to the gates. Returns the loss history and the logits of the last
    ``keep_last`` epochs.
    """
    freeze(model)
    torch.manual_seed(seed)
    generator = ArchitectureGenerator.from_analysis(analysis, hidden=hidden).to(device)
    optimizer = torch.optim.AdamW(generator.parameters(), lr=lr)
    noise = torch.Generator(device=device).manual_seed(seed)
    order = torch.Generator().manual_seed(seed)
    full = float(flops.full)
    history: list[dict[str, float]] = []
    snapshots: list[tuple[int, dict[str, torch.Tensor]]] = []
    with ChannelGates(model, analysis) as gates:
        for epoch in progress.bar(range(epochs), "gate search", total=epochs):
            generator.train()
            sums = {"loss": 0.0, "int": 0.0, "cls": 0.0, "res": 0.0, "flops_ratio": 0.0}
            perm = torch.randperm(len(pairs), generator=order)
            batches = perm.split(batch_size)
            for idx in batches:
                x = pairs.images[idx].to(device)
                y = pairs.labels[idx].to(device)
                explained = pairs.classes[idx].to(device)
                target = pairs.targets[idx].to(device)
                sampled = generator.sample(temperature=TEMPERATURE, offset=OFFSET, hard=True, generator=noise)
                gates.set(sampled)
                explanation, logits = explainer.outputs(model, x, explained)
                ratio = flops(sampled).to(device=device, dtype=torch.float32) / full
                loss_int = F.mse_loss(explanation, target)
                loss_cls = F.cross_entropy(logits, y)
                loss_res = log_hinge(ratio, target_ratio)
                loss = l_int * loss_int + l_cls * loss_cls + l_res * loss_res
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                for name, value in (
                    ("loss", loss),
                    ("int", loss_int),
                    ("cls", loss_cls),
                    ("res", loss_res),
                    ("flops_ratio", ratio),
                ):
                    sums[name] += float(value.detach())
            history.append({k: v / max(1, len(batches)) for k, v in sums.items()})
            if epoch >= epochs - keep_last:
                generator.eval()
                with torch.no_grad():
                    snapshots.append((epoch, {k: z.detach().cpu() for k, z in generator().items()}))
    return GateSearchResult(losses=history, logits=snapshots, generator=generator)
