"""Training the prompt router while the UNet stays frozen (methods/prompt.md, "Losses").

Each step draws a batch of training images with their captions. The prompt embedding z is the mean of
the caption's token states (every position, as the composite's router computes it from the UNet's
input), the predictor gives the prompt's gate logits e, and the UNet runs with one gate row per image:

- warm-up (the first ``warmup_steps``): the prompt's own Gumbel gates GS(e), so the predictor learns
  what architectures the prompts need before there are codes to choose from;
- then the routed code's Gumbel gates GS(a_k). k comes from S = <N(D(e)), N(D(a))>, D the noise-free
  decision that inference routes with (straight-through gradients): Sinkhorn-balanced when ``balanced``,
  argmax otherwise, as one-hot weights whose gradient is the soft plan's, so S learns which code
  serves a prompt.

Loss = min-SNR denoising + 0.2 output KD + 0.2 block KD (:mod:`.distill`) + 2 |log(mean_i r_i / p)|
+ 100 contrastive(z, N(D(e))) + 0.1 (-std r) + 0.1 (1 - max r) + ``routing`` x consistency, r_i = FLOPs
of row i's gates / dense FLOPs. The FLOPs model counts the whole UNet (unprunable layers included), so
the spec's p' (a target on prunable FLOPs) is the target ratio p itself here.

Choices the spec leaves open, made from measurements on a 16-channel UNet (4 codes, 300 steps):

- **Consistency** (SwAV's swapped prediction, weight 1): cross-entropy of softmax(S / 0.05) against the
  Sinkhorn plan. Training routes by the plan, inference by argmax S; without this term every prompt
  went to one code at inference although training had spread them.
- **Codes restart at the warm-up's groups**: at the end of the warm-up the K codes become the mean
  logits of k-means groups of the prompts' architectures (orthogonal codes start dense and alike).
- **Codes learn ``code_lr_scale`` (50) times faster** than the predictor: free logits at the
  predictor's rate stayed where the Gumbel noise decides (median -1.4 after 200 steps), so their
  noise-free deployment kept every gate open (FLOPs ratio 0.95 against 0.6 in training); the predictor
  at the codes' rate saturated (logits near +-10) and stopped learning.

The UNet's gates are hard in the forward pass (straight-through gradients), so every step computes with
architectures that can be sliced, and a row's FLOPs are those of the sub-network that ran.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from automl_prune.api import Progress, noise_scheduler
from automl_prune.pruning import (
    PromptRouter,
    relax,
    routing_consistency_loss,
    routing_embedding,
    routing_similarity,
    routing_weights,
)
from automl_prune_prompt.distill import DistillWeights, distill_loss, teach
from automl_prune_prompt.gated_unet import GatedUNet
from automl_prune_prompt.router import (
    ArchitectureCodes,
    ArchitecturePredictor,
    contrastive_loss,
    max_size_loss,
    size_spread_loss,
)


@dataclass(frozen=True)
class RouterSettings:
    """The router's training recipe; defaults are the spec's weights."""

    n_codes: int = 4
    steps: int = 300
    warmup_steps: int = 100
    lr: float = 0.01
    code_lr_scale: float = 50.0
    balanced: bool = True
    distill: DistillWeights = field(default_factory=lambda: DistillWeights(1.0, 0.2, 0.2))
    resource: float = 2.0
    contrastive: float = 100.0
    spread: float = 0.1
    max_size: float = 0.1
    routing: float = 1.0


class PromptArchitectures(nn.Module):
    """The predictor and the K codes of one gated UNet: the trainable part of the router."""

    def __init__(self, gated: GatedUNet, embedding_dim: int, n_codes: int) -> None:
        super().__init__()
        self.predictor = ArchitecturePredictor(embedding_dim, gated.head_sizes)
        self.codes = ArchitectureCodes(n_codes, gated.length)
        self.depth = gated.depth_slice
        self.width_units = gated.width_units
        self.budget_shift = 0.0
        self.register_buffer("unit_widths", gated.unit_widths.float())

    def relax(self, logits: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        return relax(logits, [self.depth], generator=generator, hard=True)

    def embed(self, gates: torch.Tensor) -> torch.Tensor:
        return routing_embedding(gates, self.unit_widths)

    def decide(self, logits: torch.Tensor) -> torch.Tensor:
        """Architectures as deployed: the noise-free hard gates of ``logits`` (straight-through gradient)."""
        return relax(logits, [self.depth], hard=True, noise=False)

    def deploy(self, logits: torch.Tensor) -> torch.Tensor:
        """The sliceable architectures of code ``logits`` (K, L): their decisions, with the most likely
        unit of a channel group kept where every unit closed (slicing keeps at least one)."""
        gates = self.decide(logits).detach()
        start = 0
        for units in self.width_units:
            part = slice(start, start + units)
            empty = gates[:, part].sum(dim=1) == 0
            best = logits[:, part].detach().argmax(dim=1) + start
            gates[empty, best[empty]] = 1.0
            start += units
        return gates

    def code_gates(self, shift: float | None = None) -> torch.Tensor:
        """The experts' architectures (K, L): the codes' decisions with ``budget_shift`` (or ``shift``)
        added to every logit (see ``experts.meet_budget``)."""
        return self.deploy(self.codes() + (self.budget_shift if shift is None else shift))

    def router(self, codes: list[int] | None = None) -> PromptRouter:
        """The inference router: argmax similarity to the codes' decisions as trained (without the
        budget shift, so routing is what training learned), over ``codes`` (default: all), which become
        its parts 0, 1, ... in that order."""
        weight = torch.cat([h.weight for h in self.predictor.heads]).detach()
        bias = torch.cat([h.bias for h in self.predictor.heads]).detach()
        trained = self.code_gates(shift=0.0)[codes if codes is not None else slice(None)]
        return PromptRouter(weight, bias, self.embed(trained), self.unit_widths, depth=self.depth)


def prompt_embeddings(states: torch.Tensor) -> torch.Tensor:
    """z: the mean of a caption's token states over every position (what the composite's router sees)."""
    return states.mean(dim=1)


def train_router(
    gated: GatedUNet,
    batches: Any,
    target_ratio: float,
    settings: RouterSettings,
    *,
    seed: int,
    progress: Progress,
) -> tuple[PromptArchitectures, list[dict[str, float]]]:
    """Train the predictor and codes for ``settings.steps`` Adam steps on ``batches`` (an endless iterator
    of (x0 in [-1, 1], caption token states) on the UNet's device). Returns them and each step's terms."""
    generator = torch.Generator().manual_seed(seed)
    unet = gated.unet.eval()
    trainable = [p for p in unet.parameters() if p.requires_grad]
    unet.requires_grad_(False)  # the gates learn, not the weights
    try:
        return _train(gated, batches, target_ratio, settings, generator, progress)
    finally:
        for parameter in trainable:
            parameter.requires_grad_(True)


def _train(
    gated: GatedUNet,
    batches: Any,
    target_ratio: float,
    settings: RouterSettings,
    generator: torch.Generator,
    progress: Progress,
) -> tuple[PromptArchitectures, list[dict[str, float]]]:
    unet = gated.unet
    device = next(unet.parameters()).device
    scheduler = noise_scheduler()
    end = int(scheduler.config.num_train_timesteps)
    x0, states = next(batches)
    model = PromptArchitectures(gated, states.shape[-1], settings.n_codes).to(device)
    optimizer = torch.optim.Adam(
        [
            {"params": model.predictor.parameters(), "lr": settings.lr},
            {"params": model.codes.parameters(), "lr": settings.lr * settings.code_lr_scale},
        ]
    )
    history, seen = [], []
    for step in progress.bar(range(settings.steps), f"router ({settings.n_codes} codes)"):
        if step:
            x0, states = next(batches)
        noise = torch.randn(x0.shape, generator=generator).to(device)
        t = torch.randint(0, end, (len(x0),), generator=generator).to(device)
        noisy = scheduler.add_noise(x0, noise, t)
        targets = teach(unet, noisy, t, states)
        z = prompt_embeddings(states)
        e = model.predictor(z)
        prompt_gates = model.relax(e, generator)
        prompt_arch = model.embed(model.decide(e))  # what inference routes by
        if step < settings.warmup_steps:
            gates = prompt_gates
            seen.append(z.detach())
            consistency = torch.zeros(())
        else:
            if step == settings.warmup_steps:
                pool = torch.cat(seen).unique(dim=0)
                with torch.no_grad():
                    logits = model.predictor(pool)
                model.codes.start_from(
                    logits, model.embed(model.decide(logits)), seed=generator.initial_seed()
                )
            code_gates = model.relax(model.codes(), generator)
            scores = routing_similarity(
                model.embed(model.decide(e)), model.embed(model.decide(model.codes()))
            )
            gates = routing_weights(scores, settings.balanced) @ code_gates
            consistency = routing_consistency_loss(scores, settings.balanced)
        with gated.gated(gates) as student:
            loss, terms = distill_loss(student, targets, noisy, t, states, noise, settings.distill)
        ratios = (gated.flops(gates) / gated.full_flops).float()
        resource = (ratios.mean() / target_ratio).log().abs()
        contrastive = contrastive_loss(z, prompt_arch)
        loss = (
            loss
            + settings.resource * resource
            + settings.contrastive * contrastive
            + settings.spread * size_spread_loss(ratios)
            + settings.max_size * max_size_loss(ratios)
            + settings.routing * consistency
        )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        history.append(
            {
                **terms,
                "resource": float(resource.detach()),
                "contrastive": float(contrastive.detach()),
                "ratio": float(ratios.detach().mean()),
                "routing": float(consistency.detach()),
            }
        )
    return model, history
