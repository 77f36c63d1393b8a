"""Kernel-size NAS vs fixed kernel sizes at equal parameters, ResNet-20 on Fashion-MNIST (28x28 or larger).

Every model starts from scratch (seeded) and gets the same training: ``--epochs`` epochs of the task's
recipe (SGD Nesterov, cosine, lr ``--lr``). At the parameter count of the all-3x3 ResNet-20:

- ``all-3x3``: the ResNet-20 itself; its training time is "one full training";
- ``all-kK``: every searchable conv at K_max x K_max, width reduced until it fits the parameters;
- ``random``: random odd sizes in [1, K_max], shrunk then grown at random to fill the budget;
- ``searched-scratch``: the kernel-size strategy (``search_init=scratch``, ``budget_kind=params``,
  ``target_ratio=1``), ``--search-epochs`` of joint search (fractions allowed; stopped early with
  ``--stop-every`` > 0), then the built CNN re-initialised
  and trained like the others (``final_init=scratch``);
- ``searched-cropped``: the same search, then training from the centre-cropped predicted weights
  (``final_init=cropped``: it has seen ``--search-epochs`` more epochs of data than the others).

Columns: test accuracy (on the first ``--test-limit`` official test images; selection never sees
them), parameters, fvcore FLOPs (batch 1), train and search wall time, and search time as a fraction
of one full training (the all-3x3 training of the same seed, same process), and the search's steps.
One row per method and seed; one CSV per input size (``results/kernel_size_fashion_mnist_<size>.csv``,
or ``--out``), written as it goes. The defaults are the first run's settings (2 full search epochs).

    python benchmarks/kernel_size_fashion_mnist.py --size 28 --limit-train 4000 --epochs 6 --seeds 0,1,2
"""

from __future__ import annotations

import argparse
import copy
import csv
import random
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from automl_prune_kernel_size.convert import reinitialise, searchable_layers, with_kernel_sizes
from automl_prune_kernel_size.cost import KernelCost
from summary import summary_table
from torch.utils.data import Subset

from automl_prune.flops import count_flops, count_params
from automl_prune.models.base import ModelRef
from automl_prune.models.registry import build_model
from automl_prune.search.config import SearchConfig
from automl_prune.search.setup import plan_search, prepare_search
from automl_prune.strategy import Context

HERE = Path(__file__).parent
WIDTH = 16
FIELDS = (
    "size",
    "method",
    "seed",
    "test_accuracy",
    "params_k",
    "mflops",
    "train_s",
    "search_s",
    "search_fraction",
    "search_steps",
)
METHODS = ("all-3x3", "all-k", "random", "searched-scratch", "searched-cropped")


def random_sizes(cost: KernelCost, k_max: int, budget: int, rng: random.Random) -> dict[str, int]:
    """Uniform odd sizes, then random layers shrunk until the parameters fit, then grown while they do."""
    layers = list(cost.layers)
    sizes = {name: rng.choice(range(1, k_max + 1, 2)) for name in layers}
    while cost.exact(sizes, "params") > budget:
        name = rng.choice([n for n in layers if sizes[n] > 1])
        sizes[name] -= 2
    grown = True
    while grown:
        grown = False
        for name in rng.sample(layers, len(layers)):
            if sizes[name] < k_max:
                sizes[name] += 2
                if cost.exact(sizes, "params") <= budget:
                    grown = True
                else:
                    sizes[name] -= 2
    return sizes


def widest_all_k(context: Context, k_max: int, budget: int) -> torch.nn.Module:
    """The ResNet-20 with every searchable conv at k_max, at the largest width within ``budget`` params."""
    for width in range(WIDTH, 0, -1):
        model = build_model(ModelRef("resnet20", {"width": width}), context.data.info)
        model = with_kernel_sizes(model, dict.fromkeys(searchable_layers(model), k_max))
        if count_params(model) <= budget:
            return model
    raise ValueError(f"no width fits {budget} parameters at k_max {k_max}")


def train_fixed(context: Context, model: torch.nn.Module, args: argparse.Namespace) -> tuple[Any, float]:
    reinitialise(model, context.seed)
    start = time.perf_counter()
    context.finetune(model, epochs=args.epochs, lr=args.lr)
    return model, time.perf_counter() - start


def measure(context: Context, model: torch.nn.Module) -> dict[str, float]:
    return {
        "test_accuracy": context.evaluate(model, "test")["accuracy"],
        "params_k": count_params(model) / 1e3,
        "mflops": count_flops(model, context.example_input(1)) / 1e6,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=28, help="input side (28 = native, larger = upsampled)")
    parser.add_argument("--limit-train", type=int, default=4000, help="training images (of 55,000)")
    parser.add_argument("--val-size", type=int, default=1000)
    parser.add_argument("--test-limit", type=int, default=10000)
    parser.add_argument("--epochs", type=int, default=6, help="training epochs of every compared model")
    parser.add_argument("--search-epochs", type=float, default=2.0, help="in epochs of the training set")
    parser.add_argument(
        "--stop-every", type=int, default=0, help="steps between size checks (0: no early stop)"
    )
    parser.add_argument("--stop-patience", type=int, default=3, help="unchanged checks that stop the search")
    parser.add_argument("--stop-min-epochs", type=float, default=0.25, help="no early stop before this")
    parser.add_argument("--k-max", type=int, default=7)
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--size-lr", type=float, default=0.2)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    out = args.out or HERE / "results" / f"kernel_size_fashion_mnist_{args.size}.csv"

    config = SearchConfig(
        strategy="kernel-size",
        model="resnet20",
        data="fashion-mnist",
        data_args={"limit_train": args.limit_train, "size": args.size, "val_size": args.val_size},
        out=str(Path(tempfile.mkdtemp(prefix="bench-ks-"))),
        base_epochs=1,  # unused: every compared model starts from scratch
        base_lr=args.lr,
        batch_size=args.batch_size,
        quiet=True,
    )
    prepared = prepare_search(plan_search(config))
    data = prepared.context.data
    data = replace(data, test=Subset(data.test, range(min(args.test_limit, len(data.test)))))
    strategy = prepared.plan.strategy
    params = {
        **prepared.plan.space.defaults(),
        "budget_kind": "params",
        "target_ratio": 1.0,
        "k_max": args.k_max,
        "search_init": "scratch",
        "search_epochs": args.search_epochs,
        "stop_every": args.stop_every,
        "stop_patience": args.stop_patience,
        "stop_min_epochs": args.stop_min_epochs,
        "search_lr": args.lr,
        "size_lr": args.size_lr,
        "finetune_epochs": args.epochs,
        "lr": args.lr,
    }
    base = prepared.context.model
    layers = searchable_layers(base)
    cost = KernelCost.measure(base, layers, prepared.context.example_input(1))
    budget = count_params(base)
    out.parent.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = []
    with out.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=FIELDS)
        writer.writeheader()
        for seed in (int(s) for s in args.seeds.split(",")):
            context = replace(prepared.context, data=data, seed=seed)
            full_s = None
            for method in args.methods.split(","):
                torch.manual_seed(seed)
                search_s = steps = float("nan")
                if method == "all-3x3":
                    model, train_s = train_fixed(context, copy.deepcopy(base), args)
                    full_s = train_s
                elif method == "all-k":
                    model, train_s = train_fixed(context, widest_all_k(context, args.k_max, budget), args)
                elif method == "random":
                    sizes = random_sizes(cost, args.k_max, budget, random.Random(seed))
                    model, train_s = train_fixed(context, with_kernel_sizes(base, sizes), args)
                else:
                    final = method.removeprefix("searched-")
                    start = time.perf_counter()
                    candidate = strategy.run(context, {**params, "final_init": final}, {})
                    model = candidate.model
                    search_s = candidate.metrics["search_seconds"]
                    steps = candidate.metrics["search_steps"]
                    train_s = time.perf_counter() - start - search_s
                assert count_params(model) <= budget, (method, count_params(model), budget)
                row = {
                    "size": args.size,
                    "method": method,
                    "seed": seed,
                    **measure(context, model),
                    "train_s": train_s,
                    "search_s": search_s,
                    "search_fraction": search_s / full_s if full_s else float("nan"),
                    "search_steps": steps,
                }
                rows.append(row)
                writer.writerow({k: f"{v:.5g}" if isinstance(v, float) else v for k, v in row.items()})
                f.flush()
                print({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}, flush=True)

    print(
        f"size {args.size}, train {args.limit_train}, epochs {args.epochs}, search epochs "
        f"{args.search_epochs:g} (stop every {args.stop_every} steps, "
        f"patience {args.stop_patience}, min {args.stop_min_epochs:g} epochs), k_max {args.k_max}, "
        f"budget {budget} params, seeds {args.seeds}, "
        f"threads {args.threads}, torch {torch.__version__}"
    )
    print(
        summary_table(rows, ("size", "method"), [(args.size, m) for m in args.methods.split(",")], FIELDS[3:])
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
