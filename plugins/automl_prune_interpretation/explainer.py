"""Stages 2-3 of ISP: the predictor and the amortised explainer (selector) of a frozen classifier.

The predictor is a copy of the classifier that learns to classify randomly masked images like the
classifier classifies whole ones, so that "which pixels does the decision need" has an answer: the
selector is trained to keep as few pixels as possible while the predictor, seeing only those, still
agrees with the classifier. The selector reads the classifier's own stage features (its taps), so an
explanation of a gated (pruned) classifier differs from the original's exactly when its features do:
the signal the gate search matches.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from automl_prune.api import Context, Progress, eval_mode
from automl_prune_interpretation.rbf import Size, random_rbf, rbf_mask, relaxed_bernoulli
from automl_prune_interpretation.selector import SELECTORS, make_selector
from automl_prune_interpretation.taps import Taps, find_taps

AREA_OFFSET = 5e-4  # (s + 5e-4) ** a has a finite gradient at s = 0, where a power a < 1 would not


@dataclass
class Explainer:
    """A trained explainer: the classifier's taps, the selector reading them, the predictor judging them.

    ``kind`` is "rbf" (``selector`` returns raw RBF parameters ``[N, 3]``) or "pixel" (mask logits
    ``[N, 1, H, W]``); ``image_size`` is the (H, W) of the images it explains.
    """

    taps: list[str]
    selector: nn.Module
    predictor: nn.Module
    kind: str
    image_size: Size

    def outputs(
        self, model: nn.Module, x: torch.Tensor, labels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``model``'s explanation of ``labels`` on ``x`` (raw RBF parameters or mask logits) and its logits.

        ``model`` is the classifier the explainer was built on, or a gated copy: the taps are read during
        its own forward, so gradients reach any gate hooked on it.
        """
        with Taps(model, self.taps) as taps:
            logits = model(x)
        return self.selector(taps.outputs, labels), logits

    def masks(self, model: nn.Module, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Saliency masks ``[N, 1, H, W]`` in [0, 1]."""
        raw, _ = self.outputs(model, x, labels)
        return self.selector.masks(raw, self.image_size)


def _kl(target_logits: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """KL(p_target || p), the batch mean: how much the masked view loses of the classifier's belief."""
    return F.kl_div(
        F.log_softmax(logits, dim=1),
        F.log_softmax(target_logits, dim=1),
        reduction="batchmean",
        log_target=True,
    )


def _frozen(module: nn.Module) -> nn.Module:
    """Eval mode, no parameter gradients (the training's last ones released): fixed judges from here on."""
    module.zero_grad(set_to_none=True)
    return module.eval().requires_grad_(False)


def train_predictor(
    base_model: nn.Module,
    loader: DataLoader,
    *,
    epochs: int,
    lr: float = 1e-4,
    temperature: float = 0.1,
    device: torch.device,
    seed: int,
    progress: Progress,
) -> nn.Module:
    """A copy of ``base_model`` trained (Adam) to match its output distribution through random masks.

    Loss ``KL(p_base(x) || p_pred(x * m))``, ``m`` a relaxed Bernoulli sample (temperature 0.1: nearly
    binary) of a random RBF mask. ``base_model`` is not trained. Returned frozen, in eval mode.
    """
    base_model.to(device)
    predictor = copy.deepcopy(base_model).train().requires_grad_(True)
    optimizer = torch.optim.Adam(predictor.parameters(), lr=lr)
    noise = torch.Generator(device=device).manual_seed(seed)
    for _ in progress.bar(range(epochs), "predictor epochs", total=epochs):
        for images, _ in loader:
            x = images.to(device)
            with eval_mode(base_model):
                target = base_model(x)
            size = tuple(x.shape[-2:])
            mask = relaxed_bernoulli(rbf_mask(*random_rbf(len(x), size, noise), size), temperature, noise)
            loss = _kl(target, predictor(x * mask))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    return _frozen(predictor)


def _smoothness(sample: torch.Tensor) -> torch.Tensor:
    """Total variation per image (summed over pixels, mean over the batch) of the mask padded with zeros.

    The zero padding is the small border penalty: mass on the image's edge pays its jump to the outside,
    so masks do not park against the border (where the tanh centre saturates) to dodge the penalty.
    Summing, not averaging, over pixels is what makes the default weight 1e-3 matter at 32x32.
    """
    padded = F.pad(sample, (1, 1, 1, 1))
    dy = (padded[..., 1:, :] - padded[..., :-1, :]).abs().sum(dim=(1, 2, 3))
    dx = (padded[..., :, 1:] - padded[..., :, :-1]).abs().sum(dim=(1, 2, 3))
    return (dy + dx).mean()


def train_selector(
    base_model: nn.Module,
    predictor: nn.Module,
    taps: list[str],
    loader: DataLoader,
    *,
    kind: str = "rbf",
    epochs: int,
    lr: float = 1e-3,
    l1: float = 0.2,
    l2: float = 1e-3,
    area_power: float = 0.3,
    temperature: float = 1.0,
    device: torch.device,
    seed: int,
    progress: Progress,
) -> tuple[nn.Module, list[float]]:
    """A selector of ``kind`` trained (Adam) on ``base_model``'s taps; returns it (frozen) and the per-epoch
    mean losses.

    Loss ``KL(p_base(x) || p_pred(x * s)) + l1 * mean((s + 5e-4) ** area_power) + l2 * TV(s)`` with ``s``
    a relaxed Bernoulli sample (``temperature``) of the selector's mask; the encoder (``base_model``) and
    ``predictor`` stay fixed. The class explained is the base model's prediction, not the true label:
    the explanation is of the model's decision, which is what a pruned model must keep.
    """
    image = loader.dataset[0][0]
    size = tuple(image.shape[-2:])
    base_model.to(device)
    predictor.to(device).eval()
    with eval_mode(base_model), Taps(base_model, taps) as probe:
        num_classes = base_model(image[None].to(device)).shape[1]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        selector = make_selector(kind, [t.shape[1] for t in probe.outputs], num_classes, size)
    selector.to(device).train()
    optimizer = torch.optim.Adam(selector.parameters(), lr=lr)
    noise = torch.Generator(device=device).manual_seed(seed)
    losses: list[float] = []
    with Taps(base_model, taps) as tapped:
        for _ in progress.bar(range(epochs), "selector epochs", total=epochs):
            total, batches = 0.0, 0
            for images, _ in loader:
                x = images.to(device)
                with eval_mode(base_model):
                    target = base_model(x)
                raw = selector(tapped.outputs, target.argmax(dim=1))
                sample = relaxed_bernoulli(selector.masks(raw, size), temperature, noise)
                loss = (
                    _kl(target, predictor(x * sample))
                    + l1 * (sample + AREA_OFFSET).pow(area_power).mean()
                    + l2 * _smoothness(sample)
                )
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                total, batches = total + loss.item(), batches + 1
            losses.append(total / max(1, batches))
    return _frozen(selector), losses


def mask_iou(masks_a: torch.Tensor, masks_b: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """Per-image IoU ``[N]`` of the masks thresholded at ``threshold``; two empty masks agree (IoU 1)."""
    a, b = (masks_a >= threshold).flatten(1), (masks_b >= threshold).flatten(1)
    inter, union = (a & b).sum(dim=1), (a | b).sum(dim=1)
    return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(inter, dtype=torch.float))


def build_explainer(
    context: Context,
    *,
    kind: str,
    predictor_epochs: int,
    selector_epochs: int,
    predictor_lr: float,
    selector_lr: float,
    l1: float,
    l2: float,
) -> Explainer:
    """Stages 2-3 on ``context.model`` and its shuffled training split: taps, predictor, selector."""
    loader = context.loader("train", shuffle=True)
    taps = find_taps(context.model, context.example_input(1))
    common = {"device": context.device, "seed": context.seed, "progress": context.progress}
    predictor = train_predictor(context.model, loader, epochs=predictor_epochs, lr=predictor_lr, **common)
    selector, losses = train_selector(
        context.model,
        predictor,
        taps,
        loader,
        kind=kind,
        epochs=selector_epochs,
        lr=selector_lr,
        l1=l1,
        l2=l2,
        **common,
    )
    if losses:
        context.progress.log(
            f"{kind} selector loss {losses[0]:.4f} -> {losses[-1]:.4f} in {len(losses)} epochs"
        )
    return Explainer(taps, selector, predictor, kind, tuple(context.data.info.image_size))


def explainer_state(explainer: Explainer) -> dict[str, Any]:
    """A ``torch.load(weights_only=True)``-able dict: state dicts and the facts to rebuild the modules."""
    return {
        "taps": list(explainer.taps),
        "kind": explainer.kind,
        "image_size": list(explainer.image_size),
        "selector_args": dict(explainer.selector.init_args),
        "selector": dict(explainer.selector.state_dict()),
        "predictor": dict(explainer.predictor.state_dict()),
    }


def load_explainer(state: dict[str, Any], base_model: nn.Module) -> Explainer:
    """The explainer ``explainer_state`` stored, its predictor a copy of ``base_model``; frozen, on the base
    model's device."""
    device = next(base_model.parameters()).device
    selector = SELECTORS[state["kind"]](**state["selector_args"])
    selector.load_state_dict(state["selector"])
    predictor = copy.deepcopy(base_model)
    predictor.load_state_dict(state["predictor"])
    return Explainer(
        list(state["taps"]),
        _frozen(selector.to(device)),
        _frozen(predictor),
        state["kind"],
        tuple(state["image_size"]),
    )
