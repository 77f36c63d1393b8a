"""Adversarial GAN pruning vs G-only L1 pruning and its ablations on one image-translation GAN.

One base GAN (``--model`` on ``--data``, e.g. the Pix2Pix U-Net on photo-edges or the CycleGAN ResNet on
photo-unpaired; trained once, cached) serves every run. At each generator FLOPs target every method gets
the same fine-tuning of G and D (the base GAN's own losses, Adam 2e-4, betas 0.5/0.999,
``--finetune-epochs``):

- ``gan``: the full method (genG + genD with peer feedback, local-density adversarial loss, D pruned to
  the same FLOPs ratio);
- ``no-d-agent``: the local-density loss, D never pruned;
- ``distill-only``: genG on output L1 to the original generator only, D never pruned;
- ``l1-g-only``: L1-magnitude pruning of G (torch-pruning's group L1, global), D unpruned.

Seeds vary the agents' initialisation and noise and the fine-tuning order, not the base model. Reported
per run and as mean ± std over seeds: test PSNR/SSIM/L1 (never used for selection), the Frechet
distance on the base discriminator's trunk features, FID with the standard Inception network on
``--fid-images`` test images, generator MFLOPs (fvcore, batch 1) and D's FLOPs ratio, and D's accuracy
on real and generated patches after the last fine-tuning epoch. The per-epoch D accuracies go to a second
CSV and a plot (``gan`` vs ``l1-g-only``, mean over seeds).

    python benchmarks/gan_translation.py --seeds 0,1,2 --threads 1
    python benchmarks/gan_translation.py --data photo-colour --device cuda
    python benchmarks/gan_translation.py --model cyclegan-resnet --data photo-unpaired --device cuda
    python benchmarks/gan_translation.py --data fashion-edges --limit-train 5000 --base-epochs 10

A table run as several processes (each with its own ``--out``) is merged with ``summary.py`` (the runs'
CSV and the ``_d_accuracy`` one, the latter with ``--key budget,method,seed,epoch``); ``--summarise``
then prints the merged table and redraws the D-accuracy plot without running anything.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from automl_prune_gan.figures import save_balance_plot
from automl_prune_gan.task import ImageTranslationTask
from summary import budget_table, read_csv, write_csv

from automl_prune.flops import count_flops
from automl_prune.search.config import SearchConfig
from automl_prune.search.setup import Prepared, plan_search, prepare_search

HERE = Path(__file__).parent
METHODS = {  # name: (strategy, parameter overrides)
    "gan": ("gan", {"variant": "full"}),
    "no-d-agent": ("gan", {"variant": "no-d-agent"}),
    "distill-only": ("gan", {"variant": "distill-only"}),
    "l1-g-only": ("magnitude", {"criterion": "l1", "scope": "global"}),
}
METRICS = (
    "test_psnr",
    "test_ssim",
    "test_l1",
    "test_fd_disc",
    "test_fid",
    "g_mflops",
    "g_flops_ratio",
    "d_flops_ratio",
    "d_real_acc",
    "d_fake_acc",
)


def prepare(strategy: str, args: argparse.Namespace, out: Path) -> Prepared:
    config = SearchConfig(
        strategy=strategy,
        model=args.model,
        data=args.data,
        device=args.device,
        out=str(out),
        data_args={} if args.limit_train is None else {"limit_train": args.limit_train},
        base_epochs=args.base_epochs,
        base_lr=args.base_lr,
        max_flops="0.5",
        overrides=[f"finetune_epochs={args.finetune_epochs}", "lr=2e-4"],
    )
    return prepare_search(plan_search(config))


def add_base_arguments(parser: argparse.ArgumentParser) -> None:
    """The options :func:`prepare` reads for the data and the base GAN (the base cache key follows them)."""
    parser.add_argument("--base-epochs", type=int, default=ImageTranslationTask.base_epochs)
    parser.add_argument("--base-lr", type=float, help="base GAN lr (default: the task's)")
    parser.add_argument(
        "--limit-train", type=int, help="training images of the fashion datasets (default: all)"
    )


def run(
    prepared: Prepared, gan: Prepared, params: dict[str, Any], seed: int, fid_images: int, epochs: int
) -> dict:
    """One pruned GAN; metrics the ``gan`` strategy computes itself are computed the same way here."""
    context = replace(prepared.context, seed=seed)
    torch.manual_seed(seed)
    candidate = prepared.plan.strategy.run(context, params, prepared.artifacts_for(params))
    model = candidate.model.eval()
    metrics = dict(candidate.metrics)
    if "test_fd_disc" not in metrics:  # the magnitude strategy knows nothing of GANs
        reference = gan.artifacts_for({"fid_images": fid_images})["fid"]
        metrics |= gan.plan.strategy.translation_metrics(context, context.model, model, reference)
        metrics["d_flops_ratio"] = 1.0
    history = model.history[-epochs:]  # a GAN copied from a base trained in this process carries its curve
    flops = count_flops(model, context.example_input(1))
    return {
        "test_psnr": metrics["test_psnr"],
        "test_ssim": metrics["test_ssim"],
        "test_l1": metrics["test_l1"],
        "test_fd_disc": metrics["test_fd_disc"],
        "test_fid": metrics.get("test_fid", float("nan")),
        "g_mflops": flops / 1e6,
        "g_flops_ratio": flops / context.base_flops,
        "d_flops_ratio": metrics["d_flops_ratio"],
        "d_real_acc": history[-1]["d_real_acc"],
        "d_fake_acc": history[-1]["d_fake_acc"],
        "history": history,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="pix2pix-unet")
    parser.add_argument("--data", default="photo-edges")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    add_base_arguments(parser)
    parser.add_argument("--finetune-epochs", type=int, default=5)
    parser.add_argument("--budgets", default="0.5,0.25")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--fid-images", type=int, default=64, help="test images for Inception FID (0: none)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, help="CSV path (default: results/gan_<data>.csv)")
    parser.add_argument(
        "--summarise", action="store_true", help="only print --out's table and redraw its plot"
    )
    args = parser.parse_args()
    args.out = args.out or HERE / "results" / f"gan_{args.data.replace('-', '_')}.csv"
    if args.summarise:
        plot_balance(read_csv(_curves_csv(args.out)), _curves_csv(args.out).with_suffix(".png"))
        print(budget_table(read_csv(args.out), args.methods.split(","), METRICS))
        return
    torch.set_num_threads(args.threads)

    work = Path(tempfile.mkdtemp(prefix="bench-gan-"))
    prepared = {s: prepare(s, args, work / s) for s in ("gan", "magnitude")}
    rows: list[dict] = []
    curves: list[dict] = []
    for budget in (float(b) for b in args.budgets.split(",")):
        for method in args.methods.split(","):
            strategy, overrides = METHODS[method]
            p = prepared[strategy]
            params = {
                **p.plan.space.defaults(),
                **overrides,
                "target_flops_ratio": budget,
                **({"fid_images": args.fid_images} if strategy == "gan" else {}),
            }
            for seed in (int(s) for s in args.seeds.split(",")):
                result = run(p, prepared["gan"], params, seed, args.fid_images, args.finetune_epochs)
                history = result.pop("history")
                row = {"budget": budget, "method": method, "seed": seed, **result}
                print({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}, flush=True)
                rows.append(row)
                curves += [
                    {"budget": budget, "method": method, "seed": seed, "epoch": i + 1, **h}
                    for i, h in enumerate(history)
                ]
                write_csv(args.out, rows, ["budget", "method", "seed", *METRICS])
                write_csv(
                    _curves_csv(args.out),
                    curves,
                    [
                        "budget",
                        "method",
                        "seed",
                        "epoch",
                        "d_real_acc",
                        "d_fake_acc",
                        "loss_d",
                        "loss_g",
                        "l1",
                    ],
                )

    plot_balance(curves, _curves_csv(args.out).with_suffix(".png"))
    base = prepared["gan"].base
    context = prepared["gan"].context
    _, base_metrics = context.scores(context.model)
    reference = prepared["gan"].artifacts_for({"fid_images": args.fid_images})["fid"]
    base_metrics |= prepared["gan"].plan.strategy.translation_metrics(
        context, context.model, context.model, reference
    )
    print("base model:", {k: round(v, 4) for k, v in base_metrics.items() if k.startswith("test_")})
    print(
        f"base: val PSNR {base['quality']:.3f} dB, {base['flops'] / 1e6:.3f} MFLOPs (generator); base "
        f"{args.base_epochs} ep, fine-tune {args.finetune_epochs} ep, seeds {args.seeds}, threads "
        f"{args.threads}, {args.model} on {args.data}, device {args.device}, torch {torch.__version__}"
    )
    print(budget_table(rows, args.methods.split(","), METRICS))
    print(f"wrote {args.out}")


def _curves_csv(out: Path) -> Path:
    """Where the per-epoch D accuracies of the runs in ``out`` go."""
    return out.with_name(out.stem + "_d_accuracy.csv")


def plot_balance(curves: list[dict], path: Path) -> None:
    """D's real/fake accuracy per fine-tuning epoch, mean over seeds, ``gan`` vs ``l1-g-only`` per budget."""
    series: dict[str, list[dict[str, float]]] = {}
    for budget in sorted({c["budget"] for c in curves}, reverse=True):
        for method in ("gan", "l1-g-only"):
            points = [c for c in curves if c["budget"] == budget and c["method"] == method]
            epochs = sorted({c["epoch"] for c in points})
            series[f"{method} @ {budget:g}"] = [
                {
                    key: statistics.mean(c[key] for c in points if c["epoch"] == e)
                    for key in ("d_real_acc", "d_fake_acc")
                }
                for e in epochs
            ]
    save_balance_plot(path, {k: v for k, v in series.items() if v}, title="D accuracy, mean over seeds")


if __name__ == "__main__":
    main()
