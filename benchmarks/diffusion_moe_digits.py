"""Diffusion mixture of experts (``diffusion-moe``) on digits 16x16 at 50% and 30% of the average FLOPs per
denoising step: the mixture against one Taylor-pruned UNet and against its own two ablations.

Methods, each at the same average FLOPs per step (DDIM, 50 steps) and the same fine-tuning, counted in
training images seen (``--finetune-epochs`` epochs of the training split):

- ``mixture``: the strategy's defaults (similarity intervals by dynamic programming, the knee's number of
  experts, compute spent by the routing agent); each of its n experts fine-tunes on its interval for
  epochs x images / (16 x n) steps of batch 16;
- ``uniform``: the same, with as many equal intervals (``split: uniform``);
- ``equal``: the same intervals, every expert at the budget (``allocation: equal``, no agent);
- ``taylor``: one UNet pruned by the magnitude strategy's Diff-Pruning Taylor criterion for all timesteps,
  fine-tuned for ``--finetune-epochs`` epochs of the whole schedule (batch 64).

The mixtures also train one supernet per interval before any trial (``supernet_steps`` sandwich steps,
cached and shared by every trial and seed); the single model has no such stage. Every run is the search's
own trial (``run_trial``) on one cached base UNet, so the numbers are what a search records: validation
and test denoising MSE at fixed (noise, timestep) pairs, overall and per quarter of the timesteps,
Frechet distance of 256 DDIM-50 samples, fvcore FLOPs per step. Latency (one step at batch 1 and 16, one
whole 50-step sampling run) is measured again at the end with no training running: every model in turn
for ``--rounds`` rounds, median per model. A sample grid of the base, the mixture and the single pruned
model from the same noise seeds goes to ``docs/diffusion_moe_samples.png``.

    python benchmarks/diffusion_moe_digits.py --seeds 0,1,2
"""

from __future__ import annotations

import argparse
import tempfile
from dataclasses import replace
from pathlib import Path

import torch
from diffusion_digits import base_row, measure_latency, measures, show
from summary import budget_table, write_csv

import automl_prune
from automl_prune.api import save_sample_grid
from automl_prune.diffusion.sampling import sample
from automl_prune.pruning.persistence import read_spec
from automl_prune.search.config import SearchConfig
from automl_prune.search.setup import Prepared, plan_search, prepare_search
from automl_prune.search.trial import run_trial

HERE = Path(__file__).parent
QUARTERS = ("mse_t0_249", "mse_t250_499", "mse_t500_749", "mse_t750_999")
METRICS = (
    "val_mse",
    "test_mse",
    *(f"val_{q}" for q in QUARTERS),
    "fd_val",
    "fd_test",
    "mflops_step",
    "flops_ratio",
    "params_k",
    "sampling_ms",
    "speedup_step_b1",
    "speedup_sampling",
)
MIXTURES = {
    "mixture": {},
    "uniform": {"split": "uniform"},
    "equal": {"allocation": "equal"},
}
EXPERT_BATCH = 16  # finetune_expert's batch size


def prepared_for(strategy: str, work: Path) -> Prepared:
    config = SearchConfig(
        strategy=strategy,
        model="ddpm-unet-tiny",
        data="digits",
        data_args={"size": 16},
        out=str(work / strategy),
        max_flops="0.5",
    )
    return prepare_search(plan_search(config))


def trial_params(method: str, budget: float, prepared: dict[str, Prepared], epochs: int) -> dict:
    """The space defaults of ``method``'s strategy with the budget and the shared fine-tuning budget."""
    if method == "taylor":
        defaults = prepared["magnitude"].plan.space.defaults()
        return {**defaults, "criterion": "taylor", "target_flops_ratio": budget, "finetune_epochs": epochs}
    moe = prepared["diffusion-moe"]
    params = {**moe.plan.space.defaults(), **MIXTURES[method], "target_flops_ratio": budget}
    experts = len(moe.artifacts_for(params)["boundaries"]) - 1
    images = epochs * len(moe.context.data.train)
    return {**params, "finetune_steps": round(images / (EXPERT_BATCH * experts))}


def sample_grid(base: torch.nn.Module, models: dict[str, Path], path: Path) -> Path:
    """Eight DDIM-50 samples per model from the same noise seed, one row each."""
    rows = [("base", base), *((label, automl_prune.load(d)) for label, d in models.items())]
    images = [(label, sample(m.eval(), (8, 1, 16, 16), seed=0)) for label, m in rows]
    return save_sample_grid(path, images, title="DDIM, 50 steps, the same noise per column")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budgets", default="0.5,0.3")
    parser.add_argument("--methods", default="mixture,uniform,equal,taylor")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--finetune-epochs", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved latency rounds per model")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "diffusion_moe_digits.csv")
    parser.add_argument("--grid", type=Path, default=HERE.parent / "docs" / "diffusion_moe_samples.png")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    methods = args.methods.split(",")

    work = Path(tempfile.mkdtemp(prefix="bench-diffusion-moe-"))
    prepared = {s: prepared_for(s, work) for s in ("diffusion-moe", "magnitude")}
    context = prepared["magnitude"].context
    base = base_row(prepared["magnitude"])
    base.update({f"val_{q}": v for q, v in context.evaluate(context.model, "val").items() if q in QUARTERS})
    rows, dirs = [{"budget": 1.0, "method": "base", "seed": 0, "experts": 1, **base}], [None]
    fields = ["budget", "method", "seed", "experts", "configs", "budget_shares", *METRICS]
    show(rows[0])
    number, grid_models = 0, {}
    for budget in (float(b) for b in args.budgets.split(",")):
        for method in methods:
            for seed in (int(s) for s in args.seeds.split(",")):
                search = prepared["magnitude" if method == "taylor" else "diffusion-moe"]
                params = trial_params(method, budget, prepared, args.finetune_epochs)
                seeded = replace(search, context=replace(search.context, seed=seed))
                record = run_trial(seeded, params, number, out=work / f"{number:04d}")
                number += 1
                if record.state != "complete":
                    raise SystemExit(f"{method} at {budget} failed: {record.error}")
                row = measures(
                    {**record.metrics, "latency_ms": record.latency_ms}, record.flops, record.n_params, base
                )
                row.update({f"val_{q}": record.metrics[f"val_{q}"] for q in QUARTERS})
                spec = read_spec(record.model_dir)["metadata"]
                row["experts"] = len(spec.get("configs", [None]))
                row["configs"] = " ".join(f"d{c['depth']}w{c['width']:g}" for c in spec.get("configs", []))
                row["budget_shares"] = " ".join(f"{s:.2f}" for s in spec.get("budget_shares", []))
                rows.append({"budget": budget, "method": method, "seed": seed, **row})
                dirs.append(Path(record.model_dir))
                if seed == int(args.seeds.split(",")[0]) and method in ("mixture", "taylor"):
                    grid_models[f"{method} {budget:g}"] = Path(record.model_dir)
                show(rows[-1])
                write_csv(args.out, rows, fields)

    measure_latency(prepared["magnitude"], rows, dirs, args.rounds)
    write_csv(args.out, rows, fields)
    grid = sample_grid(context.model, grid_models, args.grid)
    print(
        f"base: val MSE {base['val_mse']:.4f}, {base['mflops_step']:.1f} MFLOPs/step; fine-tuning "
        f"{args.finetune_epochs} epochs of images; seeds {args.seeds}, threads {args.threads}, "
        f"torch {torch.__version__}"
    )
    print(budget_table(rows, ["base", *methods], METRICS))
    print(f"wrote {args.out} and {grid}")


if __name__ == "__main__":
    main()
