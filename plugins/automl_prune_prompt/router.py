"""The prompt router's tensor math (methods/prompt.md, "Components").

A gate vector of length L concatenates every gated unit's logits (width parts: one per GroupNorm group,
head or feed-forward group) and the depth parts (one entry per depth-gated block). The predictor maps
a prompt embedding z to such a vector e; the K codes a_k are vectors of the same length. Both are
relaxed by ``relax`` and compared through ``routing_embedding`` N(.), so
S_ik = <N(GS(e_i)), N(GS(a_k))>, and prompt i goes to code argmax_k (training: of the Sinkhorn plan, so
the codes share the prompts evenly; inference: of S itself).

The relaxation, routing embedding and assignment are the toolbox's (:mod:`automl_prune.pruning.routing`:
the composite's router routes with them too). Choices the spec leaves open here, and why:

- The contrastive loss is the KL divergence KL(P_text || P_arch) per row, averaged over rows (the
  cross-entropy minus the constant entropy of P_text: the same gradients, but zero when they match).
- The size-spread term uses the population standard deviation, defined for a batch of one.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from automl_prune.api import SpaceError

CONTRASTIVE_TEMPERATURE = 0.03  # both row softmaxes, the spec's value


class ArchitecturePredictor(nn.Module):
    """Linear heads from a prompt embedding (dim ``embedding_dim``) to the gate logits of every unit.

    ``head_sizes`` lists each head's number of gates (a gated unit's, or a depth part's); the output
    concatenates them, length L = sum(head_sizes). Each head starts orthogonal with zero bias, so
    different prompts start with decorrelated logits of the embedding's scale.
    """

    def __init__(self, embedding_dim: int, head_sizes: Sequence[int]) -> None:
        super().__init__()
        if not head_sizes or min(head_sizes) < 1:
            raise ValueError(f"need at least one head, each with gates, got {list(head_sizes)}")
        self.heads = nn.ModuleList(nn.Linear(embedding_dim, size) for size in head_sizes)
        for head in self.heads:
            nn.init.orthogonal_(head.weight)
            nn.init.zeros_(head.bias)

    @property
    def length(self) -> int:
        """L: the number of gate logits per prompt."""
        return sum(head.out_features for head in self.heads)

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        """(N, embedding_dim) prompt embeddings to (N, L) gate logits."""
        return torch.cat([head(embeddings) for head in self.heads], dim=-1)


class ArchitectureCodes(nn.Module):
    """K learned gate-logit vectors of length L, the candidate architectures prompts are routed to.

    Orthogonal rows at the start make the codes as different as K vectors in L dimensions can be, so
    routing can tell them apart before they have learned anything.
    """

    def __init__(self, n_codes: int, length: int) -> None:
        super().__init__()
        if not 1 <= n_codes <= length:
            raise SpaceError(
                f"{n_codes} architecture codes cannot start orthogonal in {length} gate dimensions",
                f"choose between 1 and {length} codes (the number of the UNet's gates)",
            )
        self.weight = nn.Parameter(nn.init.orthogonal_(torch.empty(n_codes, length)))

    def forward(self) -> torch.Tensor:
        """The (K, L) code logits."""
        return self.weight

    @torch.no_grad()
    def start_from(
        self, logits: torch.Tensor, embeddings: torch.Tensor, *, iterations: int = 10, seed: int = 0
    ) -> torch.Tensor:
        """Restart the codes at the K groups of prompts' architectures: k-means (cosine, k-means++ seeds)
        on the routing ``embeddings`` (N, L) of the prompts' gate ``logits`` (N, L); each code becomes
        its group's mean logits. Returns each prompt's group.

        Used after the predictor's warm-up: orthogonal codes start dense and alike (their deployed gates
        all open), so argmax routing at inference sent every prompt to one code even when training
        spread them by optimal transport; codes that start where groups of prompts already are keep
        each prompt nearest the code it trains with.
        """
        generator = torch.Generator().manual_seed(seed)
        k = len(self.weight)
        centres = embeddings[torch.randint(len(embeddings), (1,), generator=generator)]
        while len(centres) < k:  # k-means++: far from the chosen centres, by cosine distance
            distance = (1 - embeddings @ centres.T).min(dim=1).values.clamp(min=0)
            weights = distance if float(distance.sum()) > 0 else torch.ones_like(distance)
            centres = torch.cat([centres, embeddings[torch.multinomial(weights, 1, generator=generator)]])
        for _ in range(iterations):
            groups = (embeddings @ centres.T).argmax(dim=1)
            centres = torch.stack(
                [
                    F.normalize(embeddings[groups == j].mean(0), dim=0) if (groups == j).any() else centres[j]
                    for j in range(k)
                ]
            )
        groups = (embeddings @ centres.T).argmax(dim=1)
        for j in range(k):
            if (groups == j).any():
                self.weight[j] = logits[groups == j].mean(0)
        return groups


def contrastive_loss(
    prompt_embeddings: torch.Tensor,
    arch_embeddings: torch.Tensor,
    temperature: float = CONTRASTIVE_TEMPERATURE,
) -> torch.Tensor:
    """Mean over rows of KL(P_text || P_arch), P = row-softmax of cosine similarities / temperature.

    Prompts close in the text encoder's space must get architectures close in routing space, which
    keeps routing semantic; the prompt side is the (fixed) target.
    """
    if len(prompt_embeddings) != len(arch_embeddings):
        raise ValueError(
            f"{len(prompt_embeddings)} prompt embeddings but {len(arch_embeddings)} architectures"
        )
    target = _log_row_softmax(prompt_embeddings.detach(), temperature)
    return F.kl_div(
        _log_row_softmax(arch_embeddings, temperature), target, log_target=True, reduction="batchmean"
    )


def _log_row_softmax(embeddings: torch.Tensor, temperature: float) -> torch.Tensor:
    unit = F.normalize(embeddings, dim=-1)
    return torch.log_softmax(unit @ unit.T / temperature, dim=-1)


def size_spread_loss(ratios: torch.Tensor) -> torch.Tensor:
    """-std(r_i): rewards prompts getting different FLOPs ratios, against every code shrinking alike."""
    return -ratios.std(correction=0)


def max_size_loss(ratios: torch.Tensor) -> torch.Tensor:
    """1 - max(r_i): keeps at least one large sub-network, so hard prompts still have somewhere to go."""
    return 1 - ratios.max()
