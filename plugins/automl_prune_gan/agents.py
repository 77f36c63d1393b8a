"""The agent phase: two architecture generators prune a GAN's generator and discriminator together.

No official code of the method was published; this follows the project's design (methods/gan.md):

- genG and genD are :class:`~automl_prune.pruning.ArchitectureGenerator` s (bidirectional GRU over
  per-layer tokens, a head per layer, hard Gumbel-sigmoid gates at T = 0.4, offset 3, straight-through).
- Peer feedback: each agent's tokens are conditioned on the other agent's current soft gate vector
  sigmoid((z + 3) / 0.4), detached, through the agent's own linear projection. "Current" is the vector
  the peer proposed at the previous step (all open before the first), so neither waits for the other.
- The local-density discriminator is the pretrained discriminator with its first conv widened to see a
  neighbourhood tuple (plus the condition x_c for Pix2Pix): the pretrained weights of the output slot
  are copied into every tuple slot divided by k + 1, so on a tuple of identical images it scores exactly
  what the pretrained discriminator scores. Its other layers, and so its channel groups, are those of the
  pretrained discriminator: genD's gates apply to both. It is trainable; the generator is frozen.
- Per batch: D step (D's weights and genD) on LSGAN(D(T), 1) + LSGAN(D(T^), 0) + l_res |log(r_D / p)|;
  then genG's step on LSGAN(D(T^), 1) + l_out L1(G(x_c), G0(x_c)) + l_res |log(r_G / p)|, with D's
  ratio target p tied to G's. r is the exact FLOPs ratio of the hard gates (``GatedFlops``).

Ablations (``variant``): ``no-d-agent`` keeps the density discriminator but never gates it (genD gets no
gradient, so genG sees its untrained, nearly all-open proposal); ``distill-only`` drops the discriminator
and the neighbourhoods (genG minimises only the output L1 and the resource loss).
"""

from __future__ import annotations

import copy
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
    analyze,
    log_abs,
)
from automl_prune_gan.models import PatchDiscriminator
from automl_prune_gan.neighbours import neighbours, tuple_of
from automl_prune_gan.task import BETAS, Meter, accuracy, lsgan

VARIANTS = ("full", "no-d-agent", "distill-only")
Gates = dict[str, torch.Tensor]


def density_discriminator(base: PatchDiscriminator, k: int, condition: int) -> PatchDiscriminator:
    """A copy of ``base`` whose first conv takes ``condition`` + (k + 1) x output channels (module doc)."""
    d = copy.deepcopy(base)
    old = base.first
    outputs = old.in_channels - condition
    new = nn.Conv2d(condition + (k + 1) * outputs, old.out_channels, 4, 2, 1, bias=old.bias is not None)
    with torch.no_grad():
        w = old.weight
        new.weight.copy_(torch.cat([w[:, :condition], *[w[:, condition:] / (k + 1)] * (k + 1)], dim=1))
        if old.bias is not None:
            new.bias.copy_(old.bias)
    d.model[0] = new
    return d


def soft_gates(logits: Gates) -> torch.Tensor:
    """The noise-free soft gate vector of per-channel logits, all groups in order."""
    return torch.sigmoid((torch.cat(list(logits.values())) + OFFSET) / TEMPERATURE)


class PeerAgents(nn.Module):
    """genG and genD, each conditioned on the other's last soft gate vector (``peer_g``/``peer_d``)."""

    def __init__(
        self, analysis_g: DependencyAnalysis, analysis_d: DependencyAnalysis, hidden: int = 64
    ) -> None:
        super().__init__()
        size_g, size_d = sum(analysis_g.sizes), sum(analysis_d.sizes)
        self.gen_g = ArchitectureGenerator.from_analysis(analysis_g, hidden=hidden, condition_dim=size_d)
        self.gen_d = ArchitectureGenerator.from_analysis(analysis_d, hidden=hidden, condition_dim=size_g)
        open_gate = float(torch.sigmoid(torch.tensor(OFFSET / TEMPERATURE)))
        self.register_buffer("peer_g", torch.full((size_g,), open_gate))
        self.register_buffer("peer_d", torch.full((size_d,), open_gate))

    def sample(self, noise: torch.Generator | None = None) -> tuple[Gates, Gates]:
        """Hard gates of both agents, each seeing the other's last vector; then the vectors move on."""
        seen_by_g, seen_by_d = self.peer_d.clone(), self.peer_g.clone()
        gates_g = self.gen_g.sample(seen_by_g, generator=noise)
        gates_d = self.gen_d.sample(seen_by_d, generator=noise)
        with torch.no_grad():
            self.peer_g.copy_(soft_gates(self.gen_g(seen_by_g)))
            self.peer_d.copy_(soft_gates(self.gen_d(seen_by_d)))
        return gates_g, gates_d

    def logits(self) -> tuple[Gates, Gates]:
        """Per-channel logits each agent proposes now, given the other's current vector."""
        return self.gen_g(self.peer_d), self.gen_d(self.peer_g)


@dataclass
class AgentResult:
    """The agents' final per-channel logits and the per-epoch means of the phase's losses."""

    logits_g: Gates
    logits_d: Gates | None
    history: list[dict[str, float]] = field(default_factory=list)


def _open(gates: Gates) -> Gates:
    return {k: torch.ones_like(v) for k, v in gates.items()}


def search_agents(
    generator: nn.Module,
    discriminator: PatchDiscriminator,
    analysis_g: DependencyAnalysis,
    analysis_d: DependencyAnalysis,
    flops_g: GatedFlops,
    flops_d: GatedFlops,
    loader: torch.utils.data.DataLoader,
    *,
    conditional: bool,
    variant: str,
    target_ratio: float,
    k: int,
    l_out: float,
    l_res: float,
    agent_lr: float,
    d_lr: float,
    epochs: int,
    binary_inputs: bool,
    seed: int,
    device: torch.device,
    progress: Progress,
    hidden: int = 64,
) -> AgentResult:
    """Train the agents on ``loader``'s inputs; ``generator``/``discriminator`` are the base model's.

    Neither argument is changed: the generator is gated on a frozen copy, the discriminator on a
    widened copy. ``conditional`` (Pix2Pix) shows the density discriminator x_c as well.
    """
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    torch.manual_seed(seed)
    original = copy.deepcopy(generator).to(device).eval().requires_grad_(False)
    gated_g = copy.deepcopy(generator).to(device).eval().requires_grad_(False)
    x0 = next(iter(loader))[0][:1].to(device)
    with torch.no_grad():
        outputs = original(x0).shape[1]
    condition = discriminator.first.in_channels - outputs if conditional else 0
    critic = density_discriminator(discriminator, k, condition).to(device).train()
    agents = PeerAgents(analysis_g, analysis_d, hidden).to(device)
    opt_g = torch.optim.Adam(agents.gen_g.parameters(), lr=agent_lr)
    opt_d = torch.optim.Adam(
        [
            {"params": critic.parameters(), "lr": d_lr, "betas": BETAS},
            {"params": agents.gen_d.parameters(), "lr": agent_lr},
        ]
    )
    analysis_critic = _critic_analysis(critic, analysis_d, tuple(x0.shape[-2:]))
    noise = torch.Generator(device=device).manual_seed(seed)
    perturb = torch.Generator().manual_seed(seed)
    full_g, full_d = float(flops_g.full), float(flops_d.full)
    history = []
    with ChannelGates(gated_g, analysis_g) as gates_g, ChannelGates(critic, analysis_critic) as gates_d:
        for _ in progress.bar(range(epochs), "agents", total=epochs):
            meter = Meter()
            for x, _ in loader:
                x = x.to(device)
                sampled_g, sampled_d = agents.sample(noise)
                if variant != "full":
                    sampled_d = _open(sampled_d)
                gates_g.set(sampled_g)
                ratio_g = flops_g(sampled_g).to(device, torch.float32) / full_g
                ratio_d = flops_d(sampled_d).to(device, torch.float32) / full_d
                loss_res_g = log_abs(ratio_g, target_ratio)
                stats = {"ratio_g": float(ratio_g.detach()), "ratio_d": float(ratio_d.detach())}
                if variant == "distill-only":
                    fake = gated_g(x)
                    with torch.no_grad():
                        real = original(x)
                    loss_out = F.l1_loss(fake, real)
                    loss_g = l_out * loss_out + l_res * loss_res_g
                    stats |= {"out": float(loss_out.detach())}
                else:
                    near = neighbours(x.cpu(), k, binary=binary_inputs, generator=perturb).to(device)
                    with torch.no_grad():
                        real = tuple_of(original, x, near)
                    fake = tuple_of(gated_g, x, near)
                    cond = [x] if conditional else []
                    gates_d.set(sampled_d)
                    real_scores = critic(torch.cat([*cond, real], 1))
                    fake_scores = critic(torch.cat([*cond, fake.detach()], 1))
                    loss_d = 0.5 * (lsgan(real_scores, True) + lsgan(fake_scores, False))
                    if variant == "full":
                        loss_d = loss_d + l_res * log_abs(ratio_d, target_ratio)
                    opt_d.zero_grad(set_to_none=True)
                    loss_d.backward()
                    opt_d.step()
                    gates_d.set({key: v.detach() for key, v in sampled_d.items()})
                    adversarial = lsgan(critic(torch.cat([*cond, fake], 1)), True)
                    channels = real.shape[1] // (k + 1)
                    loss_out = F.l1_loss(fake[:, :channels], real[:, :channels])
                    loss_g = adversarial + l_out * loss_out + l_res * loss_res_g
                    stats |= {
                        "loss_d": float(loss_d.detach()),
                        "adv": float(adversarial.detach()),
                        "out": float(loss_out.detach()),
                        "d_real_acc": accuracy(real_scores, True),
                        "d_fake_acc": accuracy(fake_scores, False),
                    }
                opt_g.zero_grad(set_to_none=True)
                loss_g.backward()
                opt_g.step()
                meter.add(**stats)
            history.append(meter.means())
    agents.eval()
    with torch.no_grad():
        logits_g, logits_d = agents.logits()
    logits_g = {key: v.cpu() for key, v in logits_g.items()}
    pruned_d = {key: v.cpu() for key, v in logits_d.items()} if variant == "full" else None
    return AgentResult(logits_g, pruned_d, history)


def _critic_analysis(
    critic: PatchDiscriminator, analysis_d: DependencyAnalysis, size: tuple[int, ...]
) -> DependencyAnalysis:
    """The widened discriminator's channel groups: those of the pretrained one, checked."""
    example = torch.zeros(1, critic.first.in_channels, *size, device=critic.first.weight.device)
    analysis = analyze(critic, example)
    if analysis.keys != analysis_d.keys or analysis.sizes != analysis_d.sizes:
        raise RuntimeError("the density discriminator's channel groups differ from the pretrained one's")
    return analysis
