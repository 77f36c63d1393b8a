"""DDPM ``ddpm-unet-tiny`` on digits 16x16 at 50% and 30% of the FLOPs per denoising step: L1, Taylor
(Diff-Pruning-style) and random channel pruning with the same fine-tuning.

One base UNet (trained once with the diffusion task's recipe, cached) serves every run. Each criterion
prunes it to the same FLOPs target per step and gets the same fine-tuning (epochs, lr, distillation from
the base, all from search_spaces/magnitude.diffusion.yaml). Seeds vary the pruning randomness (random
importance) and the fine-tuning order, not the base model. Every run goes through the search's own trial
(``run_trial``), so the figures are what a search reports: validation and test denoising MSE at fixed
(noise, timestep) pairs, Frechet distance of 256 DDIM-50 samples to 256 val / test images on the
plain-CNN digit classifier's features, fvcore FLOPs per step (batch 1) and parameters. Latency is
measured again at the end, when no training runs: the base and every saved pruned model in turn, for
``--rounds`` rounds, each model's median over rounds of the task's timings (one step at batch 1 and 16,
median of repeated calls; one 50-step DDIM sampling run at batch 1), so a model measured while another
process was busy is not penalised; the speed-ups stand beside the FLOPs ratio.

    python benchmarks/diffusion_digits.py --seeds 0,1,2
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from dataclasses import replace
from pathlib import Path

import torch
from summary import budget_table, write_csv

import automl_prune
from automl_prune.latency import latency_metrics
from automl_prune.search.config import SearchConfig
from automl_prune.search.setup import Prepared, plan_search, prepare_search
from automl_prune.search.trial import run_trial

HERE = Path(__file__).parent
METRICS = (
    "val_mse",
    "test_mse",
    "fd_val",
    "fd_test",
    "mflops_step",
    "flops_ratio",
    "params_k",
    "step_b1_ms",
    "step_b16_ms",
    "sampling_ms",
    "speedup_step_b1",
    "speedup_step_b16",
    "speedup_sampling",
)


def measures(quality: dict[str, float], flops: float, params: float, base: dict[str, float] | None) -> dict:
    """One CSV row's numbers from a trial's (or the base model's) metrics."""
    row = {
        "val_mse": quality["val_mse"],
        "test_mse": quality["test_mse"],
        "fd_val": quality.get("fd_val", float("nan")),
        "fd_test": quality.get("fd_test", float("nan")),
        "mflops_step": flops / 1e6,
        "params_k": params / 1e3,
        "step_b1_ms": quality["latency_ms"],
        "step_b16_ms": quality["latency_b16_ms"],
        "sampling_ms": quality["sampling_ms"],
    }
    ref = base or row
    row["flops_ratio"] = row["mflops_step"] / ref["mflops_step"]
    for timing in ("step_b1", "step_b16", "sampling"):
        row[f"speedup_{timing}"] = ref[f"{timing}_ms"] / row[f"{timing}_ms"]
    return row


def base_row(prepared: Prepared) -> dict:
    context = prepared.context
    quality = {
        **{f"val_{k}": v for k, v in context.evaluate(context.model, "val").items()},
        **{f"test_{k}": v for k, v in context.evaluate(context.model, "test").items()},
        **prepared.base,
    }
    return measures(quality, prepared.base["flops"], prepared.base["n_params"], None)


def show(row: dict) -> None:
    print({k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}, flush=True)


def measure_latency(prepared: Prepared, rows: list[dict], dirs: list[Path | None], rounds: int) -> None:
    """Replace each row's timings by the median over ``rounds`` interleaved rounds (``dirs``: the saved
    model of each row, None for the base), and its speed-ups by ratios to the base row's."""
    context = prepared.context
    models = [context.model if d is None else automl_prune.load(d) for d in dirs]
    timings: list[list[dict[str, float]]] = [[] for _ in models]
    for _ in range(rounds):
        for model, measured in zip(models, timings, strict=True):
            measured.append(
                latency_metrics(context.task.latency(model.to(context.device), context.data, context.device))
            )
    for row, measured in zip(rows, timings, strict=True):
        for key, column in (
            ("latency_ms", "step_b1_ms"),
            ("latency_b16_ms", "step_b16_ms"),
            ("sampling_ms",) * 2,
        ):
            row[column] = statistics.median(m[key] for m in measured)
    for row in rows:
        for timing in ("step_b1", "step_b16", "sampling"):
            row[f"speedup_{timing}"] = rows[0][f"{timing}_ms"] / row[f"{timing}_ms"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budgets", default="0.5,0.3")
    parser.add_argument("--criteria", default="l1,taylor,random")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved latency rounds per model")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "diffusion_digits.csv")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    work = Path(tempfile.mkdtemp(prefix="bench-diffusion-"))
    config = SearchConfig(
        strategy="magnitude",
        model="ddpm-unet-tiny",
        data="digits",
        data_args={"size": 16},
        out=str(work),
        max_flops="0.5",
    )
    prepared = prepare_search(plan_search(config))
    base = base_row(prepared)
    rows, dirs = [{"budget": 1.0, "method": "base", "seed": 0, **base}], [None]
    fields = ["budget", "method", "seed", *METRICS]
    show(rows[0])
    number, defaults = 0, prepared.plan.space.defaults()
    for budget in (float(b) for b in args.budgets.split(",")):
        for criterion in args.criteria.split(","):
            for seed in (int(s) for s in args.seeds.split(",")):
                params = {**defaults, "criterion": criterion, "target_flops_ratio": budget}
                seeded = replace(prepared, context=replace(prepared.context, seed=seed))
                record = run_trial(seeded, params, number, out=work / f"{number:04d}")
                number += 1
                if record.state != "complete":
                    raise SystemExit(f"{criterion} at {budget} failed: {record.error}")
                row = measures(
                    {**record.metrics, "latency_ms": record.latency_ms}, record.flops, record.n_params, base
                )
                rows.append({"budget": budget, "method": criterion, "seed": seed, **row})
                dirs.append(Path(record.model_dir))
                show(rows[-1])
                write_csv(args.out, rows, fields)

    measure_latency(prepared, rows, dirs, args.rounds)
    write_csv(args.out, rows, fields)
    info = prepared.context.task
    print(
        f"base: val MSE {base['val_mse']:.4f}, {base['mflops_step']:.1f} MFLOPs/step; {info.sampler.upper()} "
        f"{info.sample_steps} steps; seeds {args.seeds}, threads {args.threads}, torch {torch.__version__}"
    )
    print(budget_table(rows, ["base", *args.criteria.split(",")], METRICS))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
