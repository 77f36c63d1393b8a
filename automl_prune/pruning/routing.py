"""Routing samples to architecture codes by the gates they would get (APTP's routing, methods/prompt.md).

A gate vector of length L concatenates width entries (one per prunable unit) and ordered depth parts
(one entry per depth-gated block, listed from the block dropped last to the one dropped first).
``relax`` turns logits into gates, ``routing_embedding`` N(.) makes gates comparable whatever the units'
widths, ``routing_similarity`` gives S between samples' and codes' embeddings and ``assign`` picks each
sample's code (balanced by Sinkhorn while training, argmax of S at inference).

Depth is relaxed as a cumulative product of Gumbel-sigmoid samples along each depth part:
keep_j = prod_{i <= j} d_i, d_i = sigmoid((l_i + g_i + b) / T). d_j reads "block j is kept if block
j - 1 is", so keep_j is non-increasing in every sample (not only in expectation), and dropping one block
drops all after it. The hard value thresholds keep_j (still non-increasing) and passes keep_j's gradient
straight through. Each d_i closes with probability sigmoid(-(l_i + b)), about 5% at l_i = 0, so a chain
of n blocks starts dense with probability about 0.95^n.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from automl_prune.pruning.gumbel import (
    OFFSET,
    TEMPERATURE,
    deterministic_gates,
    gumbel_sigmoid,
    hard_threshold,
)
from automl_prune.pruning.transport import sinkhorn

ROUTING_EPSILON = 0.05  # Sinkhorn's entropy on exp(S / epsilon), the spec's value
ROUTING_ITERATIONS = 3  # a soft equipartition is enough for routing, as in the spec


def relax(
    logits: torch.Tensor,
    depth_slices: Sequence[slice] = (),
    temperature: float = TEMPERATURE,
    offset: float = OFFSET,
    *,
    generator: torch.Generator | None = None,
    hard: bool = False,
    noise: bool = True,
) -> torch.Tensor:
    """GS(.): gates in (0, 1) from (..., L) logits; hard gives 0/1 with straight-through gradients.

    Width entries are Gumbel-sigmoid samples; each slice of ``depth_slices`` (along the last dim) is a
    depth part, relaxed to its cumulative product so its keep values never increase (module docstring).
    ``noise=False`` is inference's decision instead: a hard entry is 1[l + b >= 0] without noise (depth
    parts: cumulative decisions), the same for every call, with the gradient of the noise-free soft gates
    sigmoid((l + b) / T) (cumulative on depth) passed straight through, so a router trained on these
    decisions is trained on what it will route with.
    """
    if noise:
        soft = gumbel_sigmoid(logits, temperature, offset, hard=False, generator=generator)
    else:
        soft = torch.sigmoid((logits + offset) / temperature)
    gates = _cumulative(soft, depth_slices)
    if not hard:
        return gates
    if noise:
        return hard_threshold(gates)
    decided = _cumulative(deterministic_gates(logits.detach(), offset), depth_slices)
    return decided + (gates - gates.detach())  # exact 0/1 forward


def _cumulative(gates: torch.Tensor, depth_slices: Sequence[slice]) -> torch.Tensor:
    """``gates`` with each depth part replaced by its cumulative product along the last dim."""
    out = gates.clone()
    for part in depth_slices:
        if not range(gates.shape[-1])[part]:
            raise ValueError(f"depth part {part} selects no gate of {gates.shape[-1]}")
        out[..., part] = torch.cumprod(gates[..., part], dim=-1)
    return out


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


def routing_weights(
    scores: torch.Tensor,
    balanced: bool,
    epsilon: float = ROUTING_EPSILON,
    iterations: int = ROUTING_ITERATIONS,
) -> torch.Tensor:
    """(N, K) one-hot rows of :func:`assign`'s choice in the forward pass, whose gradient is that of the
    soft plan (Sinkhorn's if ``balanced``, else the row softmax of S / epsilon): multiplied with the
    codes' gates, the routed code computes while S, and so the prompt side of the router, learns which
    code serves a prompt better (straight-through, as for the gates themselves)."""
    plan = sinkhorn(scores, epsilon, iterations) if balanced else torch.softmax(scores / epsilon, dim=-1)
    chosen = F.one_hot(plan.detach().argmax(dim=-1), scores.shape[-1]).to(plan.dtype)
    return chosen + (plan - plan.detach())


def routing_consistency_loss(
    scores: torch.Tensor,
    balanced: bool,
    epsilon: float = ROUTING_EPSILON,
    iterations: int = ROUTING_ITERATIONS,
) -> torch.Tensor:
    """Cross-entropy of the row softmax of S / epsilon against the training assignment (the Sinkhorn
    plan if ``balanced``, else S's own argmax), averaged over rows: SwAV's swapped prediction.

    Training routes by the plan, inference by argmax S; this term teaches S to make the choice the plan
    makes, so inference routes prompts as training did. Without balancing the target is S's own
    argmax, which only sharpens whatever code already wins: the collapse optimal transport prevents.
    """
    with torch.no_grad():
        target = (
            sinkhorn(scores, epsilon, iterations)
            if balanced
            else F.one_hot(scores.argmax(dim=-1), scores.shape[-1]).to(scores.dtype)
        )
    return -(target * torch.log_softmax(scores / epsilon, dim=-1)).sum(-1).mean()
