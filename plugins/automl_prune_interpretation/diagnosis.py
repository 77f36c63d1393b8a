"""How good is an explainer: does its mask change with the image, and does the classifier need what it marks?

ISP prunes so that the pruned model explains like the original. That signal is only worth matching if
the explanations carry per-image information (diversity) and point at what the decision uses
(faithfulness). Every number here has a baseline: random RBF masks of the same area per image, which
know how much to keep but not where.
"""

from __future__ import annotations

from collections import defaultdict

import torch
from torch import nn
from torch.utils.data import DataLoader

from automl_prune.api import eval_mode
from automl_prune_interpretation.explainer import Explainer, mask_iou
from automl_prune_interpretation.rbf import random_rbf, rbf_mask

MATCH_STEPS = 30  # bisection steps matching a random mask's area to a selector mask's (width to ~1e-7 px)
AGREEMENT_SEED = 0  # random baseline masks are the same for every call
# Agreement over a centred mask of the same area below which an explainer's masks tell the images apart
# too little to steer pruning: 0.8 points with the defaults on 5,000 Fashion-MNIST images, 0.3 on 55,000
# (masks covering the image); 8.7 at selector lr 1e-2 and 40.7 for the pixel selector.
INFORMATIVE_GAIN = 0.01
FULL_MASK_AREA = 0.9  # above this mean mask value the masks keep (nearly) the whole image


def area_matched_rbf(masks: torch.Tensor, centre: torch.Tensor) -> torch.Tensor:
    """RBF masks at ``centre`` ``[N, 2]`` with the same area (sum of mask values) as ``masks``, per image.

    The width is found by bisection, since the area grows with it; only the placement differs from
    ``masks``, so an explainer that beats these masks knows *where* to look, not merely how much to keep.
    """
    size = tuple(masks.shape[-2:])
    target = masks.sum(dim=(1, 2, 3))
    centre = centre.to(masks.device)
    lo, hi = torch.full_like(target, 1e-3), torch.full_like(target, 4.0 * max(size))
    for _ in range(MATCH_STEPS):
        mid = (lo + hi) / 2
        small = rbf_mask(centre, mid, size).sum(dim=(1, 2, 3)) < target
        lo, hi = torch.where(small, mid, lo), torch.where(small, hi, mid)
    return rbf_mask(centre, (lo + hi) / 2, size)


def baselines(masks: torch.Tensor, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """The masks an explainer is measured against, each of the same area per image as ``masks``:
    ``random`` (uniform centres) and ``centred`` (every mask at the image centre: what an explainer
    that ignores the image, and knows only that objects sit in the middle, would give)."""
    n, size = len(masks), tuple(masks.shape[-2:])
    middle = masks.new_tensor([(size[0] - 1) / 2, (size[1] - 1) / 2]).expand(n, 2)
    return {
        "random": area_matched_rbf(masks, random_rbf(n, size, generator)[0]),
        "centred": area_matched_rbf(masks, middle),
    }


def centroids(masks: torch.Tensor) -> torch.Tensor:
    """Each mask's centre of mass ``[N, 2]`` (y, x) in pixels; an all-zero mask sits at the image centre."""
    _, _, h, w = masks.shape
    ys = torch.arange(h, dtype=masks.dtype, device=masks.device).view(1, h, 1)
    xs = torch.arange(w, dtype=masks.dtype, device=masks.device).view(1, 1, w)
    m = masks[:, 0]
    mass = m.sum(dim=(1, 2))
    safe = mass.clamp(min=1e-12)
    centre = torch.stack([(m * ys).sum(dim=(1, 2)) / safe, (m * xs).sum(dim=(1, 2)) / safe], dim=1)
    middle = centre.new_tensor([(h - 1) / 2, (w - 1) / 2])
    return torch.where((mass > 0)[:, None], centre, middle)


def cross_image_iou(masks: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """Per-image IoU ``[N]`` of each thresholded mask with the next image's (the last with the first): 1
    when every image gets the same mask, low when the masks follow the images."""
    return mask_iou(masks, masks.roll(1, dims=0), threshold)


def deletion_effect(
    model: nn.Module, x: torch.Tensor, masks: torch.Tensor, probs: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """What deleting each mask's region (``x * (1 - m)``: the inputs' zero, the normalised mean) does to
    ``model``, given its class probabilities ``probs`` on ``x`` (computed once for every mask tried): the
    drop in the probability of its class ``[N]``, and whether its class changes ``[N]``."""
    labels = probs.argmax(dim=1, keepdim=True)
    after_logits = model(x * (1 - masks))
    drop = probs.gather(1, labels)[:, 0] - after_logits.softmax(dim=1).gather(1, labels)[:, 0]
    return drop, after_logits.argmax(dim=1) != labels[:, 0]


def explainer_quality(
    explainer: Explainer, model: nn.Module, loader: DataLoader, device: torch.device
) -> dict[str, float]:
    """The explainer's measurements on ``loader``, each also for its area-matched baselines (prefixed
    ``random_`` and ``centred_``, see :func:`baselines`).

    - ``agreement``: how often the predictor, seeing only ``x * m``, predicts what ``model`` predicts on
      ``x``; ``mask_area``: the masks' mean value (the fraction of the image kept).
    - ``deletion_drop``: the mean drop in ``model``'s probability of its class when the region is deleted;
      ``deletion_flip``: how often its class changes.
    - ``cross_image_iou`` (within a batch, each image's mask against the next image's) and
      ``centre_spread`` (RMS distance of the mask centroids from their mean, as a fraction of the image
      side): near 1 and 0 when the explainer gives every image the same mask.

    Masks are used as they are (soft), not sampled.
    """
    noise = torch.Generator(device=device).manual_seed(AGREEMENT_SEED)
    per_image: dict[str, list[torch.Tensor]] = defaultdict(list)
    centres = []
    with (
        torch.no_grad(),
        eval_mode(model.to(device)),
        eval_mode(explainer.selector),
        eval_mode(explainer.predictor),
    ):
        for images, _ in loader:
            x = images.to(device)
            probs = model(x).softmax(dim=1)
            labels = probs.argmax(dim=1)
            masks = explainer.masks(model, x, labels)
            values = {"mask_area": masks.mean(dim=(1, 2, 3)), "cross_image_iou": cross_image_iou(masks)}
            for prefix, m in {"": masks, **{f"{k}_": v for k, v in baselines(masks, noise).items()}}.items():
                drop, flip = deletion_effect(model, x, m, probs)
                values[f"{prefix}agreement"] = explainer.predictor(x * m).argmax(dim=1) == labels
                values[f"{prefix}deletion_drop"], values[f"{prefix}deletion_flip"] = drop, flip
            for key, value in values.items():
                per_image[key].append(value.float().cpu())
            centres.append(centroids(masks).cpu())
    found = torch.cat(centres)
    spread = (found - found.mean(dim=0)).pow(2).sum(dim=1).mean().sqrt() / max(explainer.image_size)
    means = {key: float(torch.cat(parts).mean()) for key, parts in per_image.items()}
    return means | {"centre_spread": float(spread)}


def uninformative(quality: dict[str, float]) -> str | None:
    """A notice when :func:`explainer_quality` found masks no more informative than a centred mask of
    the same area, else None: the explanation loss then steers the gates little, and a pruned model's
    mask IoU says little about its explanations."""
    agreement, centred = quality["agreement"], quality["centred_agreement"]
    if agreement - centred >= INFORMATIVE_GAIN:
        return None
    area = quality["mask_area"]
    fix = (
        "its masks cover the image: raise the area penalty (--set l1=..., default 0.2)"
        if area > FULL_MASK_AREA
        else "--set selector_lr=1e-2 gave per-image masks on Fashion-MNIST (not more accurate pruned models)"
    )
    return (
        f"interpretation: the explainer's masks are no more informative than a centred mask of the same area "
        f"(agreement {agreement:.3f} vs {centred:.3f}; mask area {area:.2f}, cross-image IoU "
        f"{quality['cross_image_iou']:.2f}), so explanations steer the pruning little; {fix} "
        "(benchmarks/README.md, ISP diagnosis)"
    )
