"""Explaining pruned copies of the base model with the original's selector, and how alike they explain.

A pruned (sliced) model has fewer channels at the explainer's taps; its tap features are scattered back
to the original positions of the channels its keep masks kept, so the selector sees the layout it was
trained on. Works for any strategy that records its keep masks (``spec["keep"]``), the baselines too.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from automl_prune.api import Context
from automl_prune.pruning import analyze
from automl_prune_interpretation.tap_groups import (
    TapGroup,
    groups_from_artifacts,
    kept_positions,
    scatter_channels,
)

IOU_THRESHOLD = 0.5


class PrunedExplainer:
    """Explains a pruned copy of the base model with the original's selector.

    The pruned model's tap features are scattered back into zeros at the channels its keep masks kept
    (``tap_groups.kept_positions``), which is what the masked original computes there, so the selector's
    decoder sees the channel layout it was trained on. ``keep`` may be boolean masks or a pruned model's
    ``spec["keep"]`` index lists (this is how magnitude baselines are explained too).
    """

    def __init__(self, explainer: Any, groups: dict[str, TapGroup | None], analysis: Any, keep: Any) -> None:
        self.explainer = explainer
        self.positions = kept_positions(groups, keep, analysis)
        self.channels = list(explainer.selector.init_args["tap_channels"])

    def outputs(
        self, model: nn.Module, x: torch.Tensor, labels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        from automl_prune_interpretation.taps import Taps

        names = list(self.explainer.taps)
        with Taps(model, names) as taps:
            logits = model(x)
        features = [
            scatter_channels(f, self.positions[n], c)
            for n, f, c in zip(names, taps.outputs, self.channels, strict=True)
        ]
        missing = [n for n, f, c in zip(names, features, self.channels, strict=True) if f.shape[1] != c]
        if missing:
            raise ValueError(f"taps {missing} of the pruned model are not carried by a gated channel group")
        return self.explainer.selector(features, labels), logits

    @torch.no_grad()
    def masks(self, model: nn.Module, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        was_training = model.training
        model.eval()
        try:
            raw, _ = self.outputs(model, x, labels)
        finally:
            model.train(was_training)
        return self.explainer.selector.masks(raw, tuple(self.explainer.image_size))


@torch.no_grad()
def mean_mask_iou(
    explainer: Any,
    original: nn.Module,
    pruned_explainer: PrunedExplainer,
    pruned: nn.Module,
    loader: Any,
    device: torch.device,
) -> float:
    """Mean IoU (masks thresholded at 0.5) of the original's and the pruned model's explanations of the
    same decision: the class the original predicts (what the selector was trained to explain)."""
    from automl_prune_interpretation.explainer import mask_iou

    total, count = 0.0, 0
    original.eval()
    for x, _ in loader:
        x = x.to(device)
        explained = original(x).argmax(dim=1)
        a = explainer.masks(original, x, explained)
        b = pruned_explainer.masks(pruned, x, explained)
        iou = mask_iou(a, b, threshold=IOU_THRESHOLD)
        total += float(iou.sum())
        count += len(iou)
    return total / max(1, count)


def explanation_agreement(
    context: Context, artifacts: dict[str, Any], pruned: nn.Module, keep: Any, split: str = "val"
) -> float:
    """Mean mask IoU on ``split`` between the original model's explanations and those of ``pruned``, a
    sliced copy of ``context.model`` whose keep masks are ``keep`` (boolean masks, or a pruned model's
    ``spec["keep"]`` index lists, as the magnitude baseline stores them). ``artifacts`` are this
    strategy's prepared artifacts for the same base model."""
    from automl_prune_interpretation.explainer import load_explainer

    explainer = load_explainer(artifacts["explainer"], context.model)
    analysis = analyze(copy.deepcopy(context.model).eval(), context.example_input(1))
    pruned_explainer = PrunedExplainer(
        explainer, groups_from_artifacts(artifacts["tap_groups"]), analysis, keep
    )
    return mean_mask_iou(
        explainer,
        context.model.eval(),
        pruned_explainer,
        pruned.eval(),
        context.loader(split),
        context.device,
    )
