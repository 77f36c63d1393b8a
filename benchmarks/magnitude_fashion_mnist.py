"""ResNet-20 on Fashion-MNIST at 50% of the base FLOPs: the magnitude baseline's accuracy, size and speed.

One base model is trained (and cached); each criterion prunes it to the same FLOPs target and gets the
same fine-tuning budget. Reported per model: test accuracy (selection never saw it), fvcore FLOPs
(multiply-add = 1, batch 1), parameters, CPU latency (median of repeated forwards after warm-up) at
batch 1 and 64, and the latency speed-up next to the FLOPs ratio.

    python benchmarks/magnitude_fashion_mnist.py --limit-train 20000 --base-epochs 10 --finetune-epochs 5
"""

from __future__ import annotations

import argparse
import csv
import platform
import tempfile
from pathlib import Path

import torch

import automl_prune
from automl_prune.flops import count_flops, count_params
from automl_prune.latency import measure_latency
from automl_prune.search.config import SearchConfig
from automl_prune.search.setup import plan_search, prepare_search
from automl_prune.search.trial import run_trial

HERE = Path(__file__).parent
COLUMNS = [
    "model",
    "criterion",
    "test_accuracy",
    "mflops",
    "flops_ratio",
    "params_k",
    "latency_b1_ms",
    "latency_b64_ms",
    "speedup_b1",
    "speedup_b64",
]


def measure(
    name: str, criterion: str, model: torch.nn.Module, accuracy: float, base: dict | None, repeats: int
) -> dict:
    model = model.eval()
    one, many = torch.zeros(1, 1, 28, 28), torch.zeros(64, 1, 28, 28)
    row = {
        "model": name,
        "criterion": criterion,
        "test_accuracy": accuracy,
        "mflops": count_flops(model, one) / 1e6,
        "params_k": count_params(model) / 1e3,
        "latency_b1_ms": measure_latency(model, one, budget_s=0, min_repeats=repeats).median_ms,
        "latency_b64_ms": measure_latency(
            model, many, budget_s=0, min_repeats=max(5, repeats // 4)
        ).median_ms,
    }
    ref = base or row
    row["flops_ratio"] = row["mflops"] / ref["mflops"]
    row["speedup_b1"] = ref["latency_b1_ms"] / row["latency_b1_ms"]
    row["speedup_b64"] = ref["latency_b64_ms"] / row["latency_b64_ms"]
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit-train", type=int, default=20000, help="training images (of 55,000)")
    parser.add_argument("--base-epochs", type=int, default=10)
    parser.add_argument("--finetune-epochs", type=int, default=5)
    parser.add_argument("--criteria", default="l1,taylor,random")
    parser.add_argument("--repeats", type=int, default=50, help="timed forwards per latency median")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "magnitude_fashion_mnist.csv")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    rows, run_dir = [], Path(tempfile.mkdtemp(prefix="bench-magnitude-"))
    config = SearchConfig(
        strategy="magnitude",
        model="resnet20",
        data="fashion-mnist",
        data_args={"limit_train": args.limit_train},
        out=str(run_dir),
        max_flops="0.5",
        base_epochs=args.base_epochs,
        base_lr=0.1,
        batch_size=128,
        overrides=["target_flops_ratio=0.5", f"finetune_epochs={args.finetune_epochs}", "lr=0.02"],
    )
    prepared = prepare_search(plan_search(config))
    context = prepared.context
    base_accuracy = context.evaluate(context.model, "test")["accuracy"]
    base = measure("resnet20", "-", context.model, base_accuracy, None, args.repeats)
    rows.append(base)
    for number, criterion in enumerate(args.criteria.split(",")):
        params = {**prepared.plan.space.defaults(), "criterion": criterion, "scope": "global"}
        record = run_trial(prepared, params, number)
        if record.state != "complete":
            raise SystemExit(f"{criterion} failed: {record.error}")
        pruned = automl_prune.load(record.model_dir)
        rows.append(
            measure("resnet20-pruned", criterion, pruned, record.metrics["test_accuracy"], base, args.repeats)
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows({k: (f"{v:.4g}" if isinstance(v, float) else v) for k, v in r.items()} for r in rows)
    print(
        f"# {platform.processor() or platform.machine()}, torch {torch.__version__}, threads {args.threads}, "
        f"train {args.limit_train}, base {args.base_epochs} ep, fine-tune {args.finetune_epochs} ep"
    )
    print("| " + " | ".join(COLUMNS) + " |")
    print("|" + "---|" * len(COLUMNS))
    for r in rows:
        print(
            "| " + " | ".join(f"{r[c]:.4g}" if isinstance(r[c], float) else str(r[c]) for c in COLUMNS) + " |"
        )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
