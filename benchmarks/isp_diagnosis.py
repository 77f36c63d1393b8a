"""ISP diagnosis on Fashion-MNIST: how good is the explainer, and which of ISP's settings matter.

Part 1, the explainer (``--part explainer``): for each explainer setting (``EXPLAINERS``), its
measurements on the validation split (``automl_prune_interpretation.diagnosis.explainer_quality``),
each against area-matched random and centred RBF masks: predictor agreement, deletion faithfulness (the
drop in the classifier's probability of its class when the masked region is deleted, and how often its
class flips) and mask diversity (IoU of one image's mask with another's; spread of the mask centres).

Part 2, ablations (``--part ablations``): ISP at one FLOPs budget with one setting changed at a time
(``VARIANTS``), and the first-order Taylor baseline, every run with the same fine-tuning; seeds vary
the pruning randomness and the fine-tuning order, not the base model (trained once, cached). Defaults
are chosen on validation accuracy; the test accuracy is reported, never used to choose.

    python benchmarks/isp_diagnosis.py --part explainer --limit-train 5000 --base-epochs 15
    python benchmarks/isp_diagnosis.py --part ablations --limit-train 5000 --base-epochs 15 --seeds 0,1,2
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

import torch
from isp_fashion_mnist import add_setting_arguments, prepare, run
from summary import summary_table, write_csv

HERE = Path(__file__).parent
EXPLAINERS = {  # name: overrides of the explainer's training settings
    "defaults (5+5 epochs)": {},
    "20+20 epochs": {"predictor_epochs": 20, "selector_epochs": 20},
    "selector lr 1e-2": {"selector_lr": 1e-2},
    "area penalty l1 1.0": {"l1": 1.0},
    "pixel selector": {"kind": "pixel"},
}
QUALITY = (
    *(
        f"{baseline}{measure}"
        for measure in ("agreement", "deletion_drop", "deletion_flip")
        for baseline in ("", "centred_", "random_")
    ),
    "cross_image_iou",
    "centre_spread",
    "mask_area",
)
VARIANTS = {  # name: (strategy, overrides of its defaults); one ISP setting changed at a time
    "isp (defaults)": ("interpretation", {}),
    "generator epochs 100": ("interpretation", {"search_epochs": 100}),
    "generator epochs 200": ("interpretation", {"search_epochs": 200}),
    "generator lr 3e-3": ("interpretation", {"gen_lr": 3e-3}),
    "generator lr 3e-2": ("interpretation", {"gen_lr": 3e-2}),
    "l_cls 1": ("interpretation", {"l_cls": 1.0}),
    "pairs 1024": ("interpretation", {"min_pairs": 1024}),
    "distillation": ("interpretation", {"distill": True}),
    "explainer 20+20 epochs": ("interpretation", EXPLAINERS["20+20 epochs"]),
    "explainer selector lr 1e-2": ("interpretation", EXPLAINERS["selector lr 1e-2"]),
    "pixel selector": ("interpretation", EXPLAINERS["pixel selector"]),
    "ce-only (l_int 0 + l_cls 1)": ("interpretation", {"l_int": 0.0, "l_cls": 1.0}),
    "taylor": ("magnitude", {"criterion": "taylor"}),
    "taylor + distillation": ("magnitude", {"criterion": "taylor", "distill": True}),
}
METRICS = ("val_accuracy", "test_accuracy", "flops_ratio", "mask_iou", "seconds")


def explainer_part(args: argparse.Namespace, work: Path) -> None:
    isp = prepare("interpretation", args, work / "interpretation")
    rows = []
    for name, overrides in EXPLAINERS.items():
        params = {**isp.plan.space.defaults(), **overrides}
        quality = isp.artifacts_for(params)["explainer_quality"]
        rows.append({"explainer": name, **quality})
        print({k: round(v, 4) if isinstance(v, float) else v for k, v in rows[-1].items()}, flush=True)
    write_csv(args.out or HERE / "results" / "isp_explainer.csv", rows, ["explainer", *QUALITY])
    print(summary_table(rows, ("explainer",), [(n,) for n in EXPLAINERS], QUALITY))


def ablation_part(args: argparse.Namespace, work: Path) -> None:
    prepared = {s: prepare(s, args, work / s) for s in ("interpretation", "magnitude")}
    out = args.out or HERE / "results" / "isp_ablations.csv"
    rows: list[dict[str, Any]] = []
    names = args.variants.split(",") if args.variants else list(VARIANTS)
    for name in names:
        strategy, overrides = VARIANTS[name]
        p = prepared[strategy]
        params = {**p.plan.space.defaults(), **overrides, "target_flops_ratio": args.budget}
        for seed in (int(s) for s in args.seeds.split(",")):
            rows.append(
                {
                    "variant": name,
                    "budget": args.budget,
                    "seed": seed,
                    **run(p, prepared["interpretation"], params, seed, repeats=3),
                }
            )
            print({k: round(v, 4) if isinstance(v, float) else v for k, v in rows[-1].items()}, flush=True)
            write_csv(out, rows, ["variant", "budget", "seed", *METRICS])
    print(summary_table(rows, ("variant",), [(n,) for n in names], METRICS))
    print(f"wrote {out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=("explainer", "ablations"), required=True)
    add_setting_arguments(parser, limit_train=5000, base_epochs=15, threads=1)
    parser.add_argument("--budget", type=float, default=0.25, help="FLOPs target of the ablations")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--variants", default="", help="names of VARIANTS, comma-separated (default: all)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="bench-isp-diagnosis-"))
    (explainer_part if args.part == "explainer" else ablation_part)(args, work)
    print(
        f"train {args.limit_train}, base {args.base_epochs} ep, fine-tune {args.finetune_epochs} ep, "
        f"threads {args.threads}, torch {torch.__version__}"
    )


if __name__ == "__main__":
    main()
