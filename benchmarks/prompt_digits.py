"""Prompt-routed experts (APTP, the ``prompt`` strategy) vs one static pruned UNet (magnitude) vs one
learned architecture for all prompts (K = 1): ``t2i-unet-tiny`` on ``digits-captions`` at 60% of the
base's mean FLOPs per guided denoising step.

Every method runs at the same FLOPs target (both classifier-free guidance passes counted; a prompt-routed
composite's FLOPs are the mean over the routed validation prompts the report samples) and the same
fine-tuning, counted in training images seen: ``--finetune-epochs`` epochs of the training split.

- ``aptp``: the strategy's space defaults (K = 4 codes, Sinkhorn balancing on); the experts share
  epochs x images / 64 steps of batch 64 in proportion to their prompts' images;
- ``aptp_k1``: the same with ``n_codes: 1``, one learned architecture for every prompt;
- ``aptp_no_ot``: the same without the optimal-transport balancing (``balanced: false``), the ablation
  under which the codes are expected to collapse (not in the default list: ``--methods`` selects it);
- ``magnitude``: one UNet pruned by the magnitude strategy's text-to-image defaults (Diff-Pruning Taylor,
  global scope), fine-tuned with the task's recipe for ``--finetune-epochs`` epochs (batch 64, AdamW,
  cosine-annealed, distillation from the base).

The routed methods train their router (``router_steps`` steps of 64 prompts on the frozen base) before
fine-tuning; that stage comes on top of the shared budget, as magnitude's Taylor scoring does. Every run
is the search's own trial (``run_trial``) on one cached base, so the numbers are what a search records:
validation and test denoising MSE at fixed (noise, timestep) pairs, the Frechet distance of guided samples
for the first ``fd_samples`` captions of each split (prompts unseen in training) and the agreement (the
share of those samples the reference classifier reads as the caption's digit), fvcore FLOPs per guided
step, and from the composite's spec each expert's training prompts, FLOPs ratio and difficulty (the
dense UNet's denoising MSE on its prompts) with the rank correlation of difficulty and size.

    python benchmarks/prompt_digits.py --seeds 0,1,2
    python benchmarks/prompt_digits.py --quick   # smoke run: 1 seed, short stages, its CSV under /tmp
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from automl_prune_prompt.figures import rank_correlation
from diffusion_digits import base_row, measures, show
from summary import summary_table, write_csv

from automl_prune.pruning.persistence import read_spec
from automl_prune.search.config import SearchConfig
from automl_prune.search.setup import Prepared, plan_search, prepare_search
from automl_prune.search.trial import TrialRecord, run_trial

HERE = Path(__file__).parent
NAN = float("nan")
METRICS = (
    "val_mse",
    "test_mse",
    "fd_val",
    "fd_test",
    "agreement_val",
    "agreement_test",
    "mflops_step",
    "flops_ratio",
    "params_k",
    "experts",
    "rank_corr",
    "trial_s",
)
PER_EXPERT = ("train_items_per_expert", "flops_ratio_per_expert", "difficulty_per_expert")
ROUTED_RATIOS = tuple(f"{s}_prompts_flops_ratio" for s in ("train", "val", "test"))  # spec: routing per split
ROUTED = {"aptp": {}, "aptp_k1": {"n_codes": 1}, "aptp_no_ot": {"balanced": False}}
QUICK = {"seeds": "0", "finetune_epochs": 1, "router_steps": 30, "warmup_steps": 10, "fd_samples": 32}


def prepared_for(strategy: str, work: Path, fd_samples: int | None) -> Prepared:
    """The search of ``strategy`` on the cached base (``fd_samples``: the report's samples per split)."""
    config = SearchConfig(
        strategy=strategy,
        model="t2i-unet-tiny",
        data="digits-captions",
        out=str(work / strategy),
        max_flops="0.6",
    )
    plan = plan_search(config)
    if fd_samples is not None:
        plan = replace(plan, task=replace(plan.task, fd_samples=fd_samples))
    return prepare_search(plan)


def trial_params(method: str, search: Prepared, args: argparse.Namespace, steps: int) -> dict[str, Any]:
    """The space defaults of ``method``'s strategy at the budget with the shared fine-tuning budget."""
    params = {**search.plan.space.defaults(), "target_flops_ratio": args.budget}
    if method == "magnitude":
        return {**params, "finetune_epochs": args.finetune_epochs}
    stages = {k: v for k in ("router_steps", "warmup_steps") if (v := getattr(args, k)) is not None}
    return {**params, **ROUTED[method], **stages, "finetune_steps": steps}


def trial_row(record: TrialRecord, base: dict[str, float]) -> dict[str, Any]:
    """One CSV row from a finished trial: quality, cost and the experts its spec describes."""
    row = measures({**record.metrics, "latency_ms": record.latency_ms}, record.flops, record.n_params, base)
    row.update({k: record.metrics.get(k, NAN) for k in ("agreement_val", "agreement_test")})
    spec = read_spec(record.model_dir)["metadata"]
    row["experts"] = len(spec.get("train_items_per_expert", [None]))
    row.update({k: " ".join(f"{v:.4g}" for v in spec.get(k, [])) for k in PER_EXPERT})
    row.update({k: spec.get(k, NAN) for k in ROUTED_RATIOS})
    row["rank_corr"] = rank_correlation(
        spec.get("difficulty_per_expert", []), spec.get("flops_ratio_per_expert", [])
    )
    row["trial_s"] = record.wall_time_s
    return row


def budget_steps(epochs: int, images: int, batch: int) -> int:
    """Steps of ``batch`` that see as many images as ``epochs`` epochs of ``images`` (magnitude's space
    takes whole epochs, so the shared budget is set in epochs)."""
    return round(epochs * images / batch)


def finetune_notes(epochs: int, images: int, batch: int) -> dict[str, str]:
    """The CSV's fine-tuning column: the same images seen, as steps shared by the experts (routed methods)
    and as epochs of the task's recipe (magnitude)."""
    steps = budget_steps(epochs, images, batch)
    return {
        "routed": f"{steps} steps x {batch} images shared by the experts (= {epochs} epochs of {images})",
        "magnitude": f"{epochs} epochs x {images} images, batches of {batch} (= {steps} steps x {batch})",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--methods", default="aptp,aptp_k1,magnitude", help=f"of {', '.join([*ROUTED, 'magnitude'])}"
    )
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--budget", type=float, default=0.6, help="mean FLOPs per guided step / the base's")
    parser.add_argument("--finetune-epochs", type=int, default=10, help="fine-tuning images, in train epochs")
    parser.add_argument("--router-steps", type=int, default=None, help="default: the prompt space's")
    parser.add_argument("--warmup-steps", type=int, default=None, help="default: the prompt space's")
    parser.add_argument("--fd-samples", type=int, default=None, help="default: the task's (256 per split)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help=f"smoke run: {QUICK}, CSV under /tmp")
    parser.add_argument("--out", type=Path, default=None, help="default: results/prompt_digits.csv")
    args = parser.parse_args()
    if args.quick:
        vars(args).update(QUICK)
    args.out = args.out or (
        Path("/tmp/aptp_quick.csv") if args.quick else HERE / "results" / "prompt_digits.csv"
    )
    torch.set_num_threads(args.threads)
    methods = args.methods.split(",")
    if unknown := set(methods) - {*ROUTED, "magnitude"}:
        parser.error(f"unknown methods {sorted(unknown)}: use {', '.join([*ROUTED, 'magnitude'])}")
    start = time.perf_counter()

    work = Path(tempfile.mkdtemp(prefix="bench-prompt-"))
    searches = {s: prepared_for(s, work, args.fd_samples) for s in ("prompt", "magnitude")}
    context = searches["prompt"].context
    steps = budget_steps(args.finetune_epochs, len(context.data.train), context.batch_size)
    base = base_row(searches["prompt"])
    base.update({k: searches["prompt"].base[k] for k in ("agreement_val", "agreement_test")})
    rows = [
        {"method": "base", "seed": 0, "finetune": "-", "experts": 1, "rank_corr": NAN, "trial_s": NAN, **base}
    ]
    finetune = finetune_notes(args.finetune_epochs, len(context.data.train), context.batch_size)
    fields = ["method", "seed", "finetune", *METRICS, *PER_EXPERT, *ROUTED_RATIOS]
    show(rows[0])
    number = 0
    for method in methods:
        for seed in (int(s) for s in args.seeds.split(",")):
            search = searches["magnitude" if method == "magnitude" else "prompt"]
            params = trial_params(method, search, args, steps)
            seeded = replace(search, context=replace(search.context, seed=seed))
            record = run_trial(seeded, params, number, out=work / f"{number:04d}")
            number += 1
            if record.state != "complete":
                raise SystemExit(f"{method} (seed {seed}) failed: {record.error}")
            kind = "magnitude" if method == "magnitude" else "routed"
            rows.append(
                {"method": method, "seed": seed, "finetune": finetune[kind], **trial_row(record, base)}
            )
            show(rows[-1])
            write_csv(args.out, rows, fields)

    print(
        f"base {base['mflops_step']:.1f} MFLOPs per guided step, target {args.budget}; fine-tuning: "
        f"{finetune['routed']}; magnitude {finetune['magnitude']}; fd_samples "
        f"{context.task.fd_samples}; seeds {args.seeds}, threads {args.threads}, torch {torch.__version__}"
    )
    print(summary_table(rows, ("method",), [(m,) for m in ("base", *methods)], METRICS))
    print(f"wrote {args.out} in {(time.perf_counter() - start) / 60:.1f} min")


if __name__ == "__main__":
    main()
