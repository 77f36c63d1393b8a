"""The prompt router's tensor math (methods/prompt.md, "Components").

A gate vector of length L concatenates every gated unit's logits (width parts: one per GroupNorm group,
head or feed-forward group) and the depth parts (one entry per depth-gated block). The predictor maps
a prompt embedding z to such a vector e; the K codes a_k are vectors of the same length. Both are
relaxed by ``relax`` and compared through ``routing_embedding`` N(.), so
S_ik = <N(GS(e_i)), N(GS(a_k))>, and prompt i goes to code argmax_k (training: of the Sinkhorn plan, so
the codes share the prompts evenly; inference: of S itself).

Choices the spec leaves open, and why:

- Depth is relaxed as a cumulative product of Gumbel-sigmoid samples along each depth part:
  keep_j = prod_{i <= j} d_i, d_i = sigmoid((l_i + g_i + b) / T). d_j reads "block j is kept if block
  j - 1 is", so keep_j is non-increasing in every sample (not only in expectation): a part lists its
  blocks in the order they may be dropped last to first, and dropping one drops all after it. The hard
  value thresholds keep_j (still non-increasing) and passes keep_j's gradient straight through. Each
  d_i closes with probability sigmoid(-(l_i + b)), about 5% at l_i = 0, so a chain of n blocks starts
  dense with probability about 0.95^n.
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
from automl_prune.pruning import OFFSET, TEMPERATURE, gumbel_sigmoid, hard_threshold, sinkhorn

ROUTING_EPSILON = 0.05  # Sinkhorn's entropy on exp(S / epsilon), the spec's value
ROUTING_ITERATIONS = 3  # a soft equipartition is enough for routing, as in the spec
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


def relax(
    logits: torch.Tensor,
    depth_slices: Sequence[slice] = (),
    temperature: float = TEMPERATURE,
    offset: float = OFFSET,
    *,
    generator: torch.Generator | None = None,
    hard: bool = False,
) -> torch.Tensor:
    """GS(.): gates in (0, 1) from (..., L) logits; hard gives 0/1 with straight-through gradients.

    Width entries are Gumbel-sigmoid samples; each slice of ``depth_slices`` (along the last dim) is a
    depth part, relaxed to its cumulative product so its keep values never increase (module docstring).
    """
    soft = gumbel_sigmoid(logits, temperature, offset, hard=False, generator=generator)
    gates = soft.clone()
    for part in depth_slices:
        if not range(logits.shape[-1])[part]:
            raise ValueError(f"depth part {part} selects no gate of {logits.shape[-1]}")
        gates[..., part] = torch.cumprod(soft[..., part], dim=-1)
    return hard_threshold(gates) if hard else gates


def routing_embedding(gates: torch.Tensor, unit_widths: torch.Tensor | Sequence[int]) -> torch.Tensor:
    """N(.): hard-threshold (straight-through), scale by 1/sqrt(unit width), l2-normalise rows.

    ``unit_widths[j]`` is the number of gates of entry j's unit (1 for a depth entry), so a unit weighs
    the same in the cosine whatever its size. An all-closed row stays zero rather than dividing by 0.
    """
    widths = torch.as_tensor(unit_widths, dtype=gates.dtype, device=gates.device)
    if widths.shape != gates.shape[-1:] or not bool((widths >= 1).all()):
        raise ValueError(f"need one width >= 1 per gate ({gates.shape[-1]}), got shape {widths.shape}")
    return F.normalize(hard_threshold(gates) * widths.rsqrt(), dim=-1)


def routing_similarity(prompt_arch: torch.Tensor, code_arch: torch.Tensor) -> torch.Tensor:
    """S (N, K): S_ik = <prompt_arch_i, code_arch_k>, both routing embeddings (``routing_embedding``)."""
    if prompt_arch.dim() != 2 or code_arch.dim() != 2 or prompt_arch.shape[1] != code_arch.shape[1]:
        raise ValueError(f"need (N, L) and (K, L) embeddings, got {prompt_arch.shape} and {code_arch.shape}")
    return prompt_arch @ code_arch.T


def assign(
    scores: torch.Tensor,
    balanced: bool,
    epsilon: float = ROUTING_EPSILON,
    iterations: int = ROUTING_ITERATIONS,
) -> torch.Tensor:
    """Each prompt's code (N,): argmax of the Sinkhorn plan if ``balanced`` (training), else of S.

    No gradient flows through the choice; the routed code's gates carry the gradient instead.
    """
    scores = scores.detach()
    return (sinkhorn(scores, epsilon, iterations) if balanced else scores).argmax(dim=-1)


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
