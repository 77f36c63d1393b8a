"""ISP vs its CE-only ablation and magnitude baselines on Fashion-MNIST, at 50% and 25% of the base FLOPs.

One base ResNet-20 (trained once, cached) and one explainer (ISP's cached ``prepare``) serve every run.
Each method prunes the base to the same FLOPs target and gets the same fine-tuning (epochs, lr). Seeds
vary the pruning randomness (generator init and Gumbel noise, random importance) and the fine-tuning
order, not the base model. Reported per run and as mean / std over seeds: test accuracy (selection
never sees it), fvcore FLOPs, parameters, CPU latency (median, batch 1), and explanation agreement: mean
IoU of the thresholded RBF masks of the pruned and the original model on validation images (the
baselines are explained through their stored keep masks, like ISP's own models).

    python benchmarks/isp_fashion_mnist.py --limit-train 5000 --seeds 0,1,2
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from automl_prune_interpretation.pruned_explanations import explanation_agreement
from summary import budget_table, write_csv

from automl_prune.flops import count_flops, count_params
from automl_prune.latency import measure_latency
from automl_prune.search.config import SearchConfig
from automl_prune.search.setup import Prepared, plan_search, prepare_search

HERE = Path(__file__).parent
METHODS = {  # name: (strategy, parameter overrides)
    "isp": ("interpretation", {}),
    "ce-only": ("interpretation", {"l_int": 0.0, "l_cls": 1.0}),
    "l1": ("magnitude", {"criterion": "l1"}),
    "l2": ("magnitude", {"criterion": "l2"}),
    "taylor": ("magnitude", {"criterion": "taylor"}),
    "random": ("magnitude", {"criterion": "random"}),
}
METRICS = ("test_accuracy", "mflops", "flops_ratio", "params_k", "latency_b1_ms", "mask_iou")
FIELDS = ("budget", "method", "seed", *METRICS, "val_accuracy", "seconds", "device")


def add_setting_arguments(
    parser: argparse.ArgumentParser, *, limit_train: int, base_epochs: int, threads: int
) -> None:
    """The options :func:`prepare` reads: data scale, base training, fine-tuning, model, device."""
    parser.add_argument("--limit-train", type=int, default=limit_train, help="training images (of 55,000)")
    parser.add_argument("--base-epochs", type=int, default=base_epochs)
    parser.add_argument("--finetune-epochs", type=int, default=3)
    parser.add_argument("--model", default="resnet20", help="resnet20 or resnet56")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--threads", type=int, default=threads)


def prepare(strategy: str, args: argparse.Namespace, out: Path) -> Prepared:
    config = SearchConfig(
        strategy=strategy,
        model=args.model,
        data="fashion-mnist",
        data_args={"limit_train": args.limit_train},
        out=str(out),
        base_epochs=args.base_epochs,
        base_lr=0.1,
        batch_size=128,
        max_flops="0.5",
        device=args.device,
        overrides=[f"finetune_epochs={args.finetune_epochs}", "lr=0.02"],
    )
    return prepare_search(plan_search(config))


def run(
    prepared: Prepared, isp: Prepared, params: dict[str, Any], seed: int, repeats: int
) -> dict[str, float]:
    context = replace(prepared.context, seed=seed)
    torch.manual_seed(seed)
    artifacts = prepared.artifacts_for(params)
    start = time.perf_counter()
    candidate = prepared.plan.strategy.run(context, params, artifacts)
    seconds = time.perf_counter() - start
    model = candidate.model.eval()
    example = context.example_input(1)
    flops = count_flops(model, example)
    iou = candidate.metrics.get("val_mask_iou")
    if iou is None:
        iou = explanation_agreement(isp.context, isp.artifacts, model, candidate.spec["keep"])
    return {
        "val_accuracy": candidate.quality,
        "test_accuracy": candidate.metrics["test_accuracy"],
        "mflops": flops / 1e6,
        "flops_ratio": flops / context.base_flops,
        "params_k": count_params(model) / 1e3,
        "latency_b1_ms": measure_latency(model, example, budget_s=0, min_repeats=repeats).median_ms,
        "mask_iou": float(iou),
        "seconds": seconds,
        "device": context.device.type,  # latency and seconds are only comparable between rows of one device
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_setting_arguments(parser, limit_train=5000, base_epochs=10, threads=2)
    parser.add_argument("--budgets", default="0.5,0.25")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--repeats", type=int, default=30, help="timed forwards per latency median")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "isp_fashion_mnist.csv")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    work = Path(tempfile.mkdtemp(prefix="bench-isp-"))
    prepared = {s: prepare(s, args, work / s) for s in ("interpretation", "magnitude")}
    rows = []
    for budget in (float(b) for b in args.budgets.split(",")):
        for method in args.methods.split(","):
            strategy, overrides = METHODS[method]
            p = prepared[strategy]
            params = {**p.plan.space.defaults(), **overrides, "target_flops_ratio": budget}
            for seed in (int(s) for s in args.seeds.split(",")):
                row = {
                    "budget": budget,
                    "method": method,
                    "seed": seed,
                    **run(p, prepared["interpretation"], params, seed, args.repeats),
                }
                print({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}, flush=True)
                rows.append(row)
                write_csv(args.out, rows, FIELDS)  # after every run: a stopped benchmark keeps what finished

    base = prepared["magnitude"].base
    print(
        f"base: val acc {base['quality']:.4f}, {base['flops'] / 1e6:.2f} MFLOPs; train {args.limit_train}, "
        f"base {args.base_epochs} ep, fine-tune {args.finetune_epochs} ep, seeds {args.seeds}, "
        f"{args.model} on {args.device}, threads {args.threads}, torch {torch.__version__}"
    )
    print(budget_table(rows, args.methods.split(","), METRICS))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
