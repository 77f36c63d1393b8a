"""Interpretation-steered pruning (ISP, ECCV 2022): prune so that the model still explains like the original.

Stages (the project's method spec, shared/methods/interpretation.md):

- ``prepare`` (cached by the core, shared by every trial and every later search on the same base
  model): the explainer (predictor + RBF selector, ``explainer.py``), the pruning pairs (a seeded subset
  of ``pair_fraction`` of the training images, at least ``min_pairs``, with the original model's raw RBF
  parameters, activated centre/width, and labels), the explainer's quality on validation images
  (``diagnosis.py``: agreement, deletion faithfulness and mask diversity, each against random masks),
  and which channel group carries each tap (``tap_groups.py``) so that pruned models can be explained.
- ``pruned_explanations.explanation_agreement`` explains any pruned copy of the base model whose keep
  masks are known
  (e.g. a magnitude trial's ``spec["keep"]``) and returns its mean mask IoU with the original.
- ``run`` (one trial): the gate search (``gate_search.py``), extraction with budget repair and the
  masked == sliced check (``automl_prune.pruning.extraction``), fine-tuning with the task's own training for
  ``finetune_epochs`` (the magnitude baseline's budget), and the explanation agreement of the pruned
  model with the original (mean IoU of masks thresholded at 0.5 on the validation split), plus a figure.

Which explainer settings shape ``prepare``: ``prepare_params`` names ``kind``, ``predictor_epochs``,
``selector_epochs``, ``predictor_lr``, ``selector_lr``, ``l1``, ``l2``, ``pair_fraction`` and
``min_pairs``, so the core prepares with the search space's fixed values (or defaults) of these, and a
trial whose values differ (a searched one) gets an explainer prepared for its own values through the
same on-disk cache, once per process.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import torch
from torch import nn

from automl_prune.api import Candidate, Context, Inputs, Strategy, builtin_space_path, hookimpl
from automl_prune.pruning import (
    GatedFlops,
    analyze,
    choose,
    kept_indices,
    repair_to_budget,
    slice_checked,
    smallest_flops,
)
from automl_prune_interpretation.gate_search import Pairs, freeze, search_gates
from automl_prune_interpretation.pruned_explanations import IOU_THRESHOLD, PrunedExplainer, mean_mask_iou
from automl_prune_interpretation.tap_groups import groups_from_artifacts, groups_to_artifacts, tap_groups

SELECT_LAST = 3  # extraction chooses among the architectures after each of the last epochs
PROBE_IMAGES = 16  # validation images used to find which group carries each tap
FIGURE_IMAGES = 8


def _pair_indices(n: int, fraction: float, minimum: int, seed: int) -> torch.Tensor:
    count = min(n, max(math.ceil(fraction * n), minimum))
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:count].sort().values


def _stack(dataset: Any, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    items = [dataset[int(i)] for i in indices]
    return torch.stack([x for x, _ in items]), torch.tensor([int(y) for _, y in items])


class InterpretationStrategy(Strategy):
    name = "interpretation"
    tasks = ("classification",)
    space = builtin_space_path("interpretation")
    version = "2"
    description = (
        "ISP: channel gates learned so the pruned model's RBF explanations match the original's, "
        "under a FLOPs hinge; extraction on validation, equal-budget fine-tuning"
    )
    prepare_params = (
        "kind",
        "predictor_epochs",
        "selector_epochs",
        "predictor_lr",
        "selector_lr",
        "l1",
        "l2",
        "pair_fraction",
        "min_pairs",
    )

    # ---- prepare: explainer + pruning pairs (cached by the core) ----------------------------------

    def prepare(self, context: Context, settings: dict[str, Any]) -> dict[str, Any]:
        from automl_prune_interpretation.diagnosis import explainer_quality, uninformative
        from automl_prune_interpretation.explainer import build_explainer, explainer_state
        from automl_prune_interpretation.rbf import activate

        s = dict(settings)
        with torch.random.fork_rng():
            torch.manual_seed(context.seed)
            explainer = build_explainer(
                context,
                kind=s["kind"],
                predictor_epochs=int(s["predictor_epochs"]),
                selector_epochs=int(s["selector_epochs"]),
                predictor_lr=float(s["predictor_lr"]),
                selector_lr=float(s["selector_lr"]),
                l1=float(s["l1"]),
                l2=float(s["l2"]),
            )
        indices = _pair_indices(
            len(context.data.train), float(s["pair_fraction"]), int(s["min_pairs"]), context.seed
        )
        images, labels = _stack(context.data.train, indices)
        model = context.model.eval()
        targets, classes = [], []
        with torch.no_grad():
            for chunk in images.split(context.batch_size):
                explained = model(chunk.to(context.device)).argmax(dim=1)
                raw, _ = explainer.outputs(model, chunk.to(context.device), explained)
                targets.append(raw.detach().cpu())
                classes.append(explained.cpu())
        raw = torch.cat(targets)
        pairs: dict[str, Any] = {
            "indices": indices,
            "images": images,
            "labels": labels,
            "classes": torch.cat(classes),
            "raw": raw,
        }
        if s["kind"] == "rbf":
            centre, width = activate(raw, tuple(explainer.image_size))
            pairs.update(centre=centre, width=width)
        quality = explainer_quality(explainer, model, context.loader("val"), context.device)
        if notice := uninformative(quality):
            context.progress.log(notice)
        probe = copy.deepcopy(context.model).eval()
        example = context.example_input(1)
        groups = tap_groups(
            probe,
            analyze(probe, example),
            list(explainer.taps),
            context.first_batch("val", PROBE_IMAGES)[0],
        )
        return {
            "settings": s,
            "explainer": explainer_state(explainer),
            "pairs": pairs,
            "explainer_quality": quality,
            "tap_groups": groups_to_artifacts(groups),
        }

    def min_flops(self, architecture: nn.Module, example: Inputs) -> float:
        return float(smallest_flops(architecture, example))

    # ---- run: gate search -> extraction -> fine-tuning ---------------------------------------------

    def run(self, context: Context, params: dict[str, Any], artifacts: dict[str, Any]) -> Candidate:
        from automl_prune_interpretation.explainer import load_explainer
        from automl_prune_interpretation.figures import save_mask_figure

        device = context.device
        explainer = load_explainer(artifacts["explainer"], context.model)
        for part in (explainer.selector, explainer.predictor):
            freeze(part.to(device))
        stored = artifacts["pairs"]
        pairs = Pairs(stored["images"], stored["labels"], stored["classes"], stored["raw"])
        base = copy.deepcopy(context.model).to(device).eval()
        example = context.example_input(1)
        analysis = analyze(base, example)
        flops = GatedFlops(base, analysis, example)
        ratio = context.budget_ratio(params)
        target = context.call_target_flops(params)
        search = search_gates(
            base,
            analysis,
            flops,
            explainer,
            pairs,
            target_ratio=ratio,
            l_int=float(params["l_int"]),
            l_cls=float(params["l_cls"]),
            l_res=float(params["l_res"]),
            lr=float(params["gen_lr"]),
            epochs=int(params["search_epochs"]),
            batch_size=int(params.get("search_batch_size", context.batch_size)),
            keep_last=SELECT_LAST,
            seed=context.seed,
            device=device,
            progress=context.progress,
        )
        snapshots = search.logits
        if not snapshots:  # no search epochs: the generator's initial proposal
            with torch.no_grad():
                snapshots = [(-1, {k: z.detach().cpu() for k, z in search.generator().items()})]
        candidates = [(epoch, repair_to_budget(z, analysis, flops, target)) for epoch, z in snapshots]
        metric = context.task.quality_metric
        epoch, keep, scores = choose(candidates, base, analysis, lambda m: context.evaluate(m, "val")[metric])
        x_val, _ = context.first_batch("val")
        pruned = slice_checked(base, analysis, keep, example, x_val)
        for p in pruned.parameters():
            p.requires_grad_(True)

        groups = groups_from_artifacts(artifacts["tap_groups"])
        pruned_explainer = PrunedExplainer(explainer, groups, analysis, keep)
        original = context.model.eval()
        iou_before = mean_mask_iou(
            explainer, original, pruned_explainer, pruned, context.loader("val"), device
        )
        masked_quality = scores[epoch]
        candidate = context.finish(
            pruned,
            params,
            target_flops=context.target_flops(params),
            spec={
                "keep": kept_indices(keep),
                "isp": {
                    "chosen_epoch": epoch,
                    "explainer_kind": artifacts["settings"]["kind"],
                    "masked_val_accuracy": {str(k): v for k, v in scores.items()},
                },
            },
        )
        iou = mean_mask_iou(explainer, original, pruned_explainer, pruned, context.loader("val"), device)

        n = FIGURE_IMAGES
        with torch.no_grad():
            shown, explained = x_val[:n], original(x_val[:n]).argmax(dim=1)
            before = explainer.masks(original, shown, explained)
            after = pruned_explainer.masks(pruned, shown, explained)
        from automl_prune_interpretation.explainer import mask_iou

        candidate.figures.append(
            save_mask_figure(
                context.figure_path("isp_masks"),
                shown,
                before,
                after,
                explained,
                iou=mask_iou(before, after, threshold=IOU_THRESHOLD),
                title=f"ISP at {ratio:.2f} of the base FLOPs: masks of the original (middle) and pruned "
                "(bottom)",
            )
        )
        last = search.losses[-1] if search.losses else {}
        candidate.metrics |= {
            "val_mask_iou": iou,
            "val_mask_iou_before_finetune": iou_before,
            "val_masked_accuracy": masked_quality,
            "search_loss_first": search.losses[0]["loss"] if search.losses else float("nan"),
            "search_loss_last": last.get("loss", float("nan")),
            "search_int_last": last.get("int", float("nan")),
            "search_flops_ratio_last": last.get("flops_ratio", float("nan")),
            **{f"explainer_{k}": float(v) for k, v in artifacts["explainer_quality"].items()},
        }
        return candidate


@hookimpl
def register_strategies(register: Any) -> None:
    register(InterpretationStrategy)
