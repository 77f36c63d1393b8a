"""Is the search worth it? Hypervolume of the feasible front against trial count: NSGA-II, TPE, random.

Each study is what ``automl-prune search --sampler S --seed K --trials N --max-flops 0.5`` runs on
ResNet-20 / digits: the project's ``run_optuna`` (its sampler, the space's defaults enqueued first,
the FLOPs budget as a constraint, repeats asked again), with the trials' objectives only
(``measure=False``: no latency timing, saved models or MLflow). Fine-tuning is 1 epoch (cheap trials).
One base model and one ISP explainer (seed 0, cached) serve every study; ``--seed`` K seeds only the
sampler, and a trial's training is seeded by its trial number, alike in every study. After each trial:
the hypervolume of the feasible front so far, objectives validation accuracy (up) and FLOPs ratio to
the base (down), reference point (accuracy 0, FLOPs ratio = the budget): the area under the front's
step curve inside the budget, so divided by the budget it is the mean, over FLOPs caps in (0, budget],
of the best accuracy found under the cap.

    python benchmarks/sampler_hypervolume.py --threads 1 --spaces magnitude
    python benchmarks/sampler_hypervolume.py --threads 1 --spaces interpretation --trials 20
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from summary import mean_std, read_csv, summary_table, write_csv

from automl_prune.io import atomic_write_bytes, png_bytes
from automl_prune.search.config import SAMPLERS, SearchConfig
from automl_prune.search.optuna_backend import run_optuna
from automl_prune.search.pareto import hypervolume, pareto_front
from automl_prune.search.records import TrialRecord
from automl_prune.search.setup import Prepared, plan_search, prepare_search

HERE = Path(__file__).parent
SPACES = {  # strategy: --set overrides besides the 1-epoch fine-tuning
    "magnitude": [],
    # the space's 10..40 generator epochs would take 4x the time budget on a shared 2-core machine
    "interpretation": ["search_epochs=2..5"],
}
COLUMNS = [
    "space",
    "sampler",
    "seed",
    "trial",
    "hypervolume",
    "best_val_accuracy",
    "val_accuracy",
    "flops_ratio",
    "feasible",
    "wall_s",
    "params",
]
CHECKPOINTS = (5, 10, 20, 40)
TIE = 1e-9  # hypervolumes closer than this are the same front


def prepare(strategy: str, args: argparse.Namespace, work: Path) -> Prepared:
    """The search as the CLI plans and prepares it (base model and explainer cached across runs)."""
    config = SearchConfig(
        strategy=strategy,
        model="resnet20",
        data="digits",
        out=str(work / strategy),
        trials=args.trials,
        max_flops=str(args.max_flops),
        overrides=["finetune_epochs=1", *SPACES[strategy]],
        quiet=True,
    )
    return prepare_search(plan_search(config))


def study(prepared: Prepared, sampler: str, seed: int, work: Path) -> list[dict[str, Any]]:
    """One search's trials, each with the hypervolume and best accuracy of the feasible front so far."""
    config = replace(prepared.plan.config, sampler=sampler, seed=seed, out=str(work / f"{sampler}-{seed}"))
    config.run_dir.mkdir(parents=True)
    seeded = replace(prepared, plan=replace(prepared.plan, config=config))
    base_flops, budget = prepared.plan.base_flops, prepared.plan.max_flops / prepared.plan.base_flops
    searched = prepared.plan.space.searched
    records: list[TrialRecord] = []
    rows: list[dict[str, Any]] = []

    def on_trial(record: TrialRecord) -> None:
        records.append(record)
        front = pareto_front(records)
        done = record.state == "complete"
        rows.append(
            {
                "space": config.strategy,
                "sampler": sampler,
                "seed": seed,
                "trial": len(records),
                "hypervolume": hypervolume([(r.quality, r.flops / base_flops) for r in front], (0.0, budget)),
                "best_val_accuracy": max((r.quality for r in front), default=0.0),
                "val_accuracy": record.quality if done else float("nan"),
                "flops_ratio": record.flops / base_flops if done else float("nan"),
                "feasible": int(record.feasible),
                "wall_s": record.wall_time_s,
                "params": json.dumps({k: record.params[k] for k in searched}, sort_keys=True),
            }
        )

    run_optuna(seeded, on_trial, measure=False)
    return rows


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    """Mean ± std (over seeds) of the hypervolume against trial count, one panel per space."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    spaces = list(dict.fromkeys(r["space"] for r in rows))
    fig, axes = plt.subplots(1, len(spaces), figsize=(5.2 * len(spaces), 3.8), dpi=120, squeeze=False)
    for ax, space in zip(axes[0], spaces, strict=True):
        for i, sampler in enumerate(dict.fromkeys(r["sampler"] for r in rows if r["space"] == space)):
            runs = [r for r in rows if r["space"] == space and r["sampler"] == sampler]
            trials = sorted({r["trial"] for r in runs})
            values = np.array([[r["hypervolume"] for r in runs if r["trial"] == t] for t in trials])
            mean, std = values.mean(axis=1), values.std(axis=1, ddof=1 if values.shape[1] > 1 else 0)
            style = ("-", "--", ":")[i % 3]  # the samplers share their first trials: overlaps stay visible
            ax.plot(trials, mean, style, c=f"C{i}", label=f"{sampler} ({values.shape[1]} seeds)")
            ax.fill_between(trials, mean - std, mean + std, color=f"C{i}", alpha=0.2)
        ax.set_title(f"{space} space, ResNet-20 / digits")
        ax.set_xlabel("trials")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.set_ylabel("hypervolume (val accuracy x FLOPs ratio)")
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    atomic_write_bytes(path, png_bytes(fig))


def mean_curve(rows: list[dict[str, Any]], space: str, sampler: str) -> dict[int, float]:
    """Trial count -> mean hypervolume over the seeds of one sampler on one space."""
    runs = [r for r in rows if r["space"] == space and r["sampler"] == sampler]
    trials = sorted({r["trial"] for r in runs})
    return {t: float(np.mean([r["hypervolume"] for r in runs if r["trial"] == t])) for t in trials}


def trials_needed(rows: list[dict[str, Any]], spaces: list[str], samplers: list[str]) -> str:
    """Per space and sampler: the first trial count whose mean hypervolume reaches 90% and 95% of the
    best sampler's mean at the last trial (the space's reachable front, as far as 40 trials tell)."""
    lines = ["| space | sampler | trials to 90% | trials to 95% |", "|---|---|---|---|"]
    for space in spaces:
        curves = {x: c for x in samplers if (c := mean_curve(rows, space, x))}
        if not curves:
            continue
        best = max(c[max(c)] for c in curves.values())
        for sampler, curve in curves.items():
            cells = [next((str(t) for t, v in curve.items() if v >= f * best), "-") for f in (0.9, 0.95)]
            lines.append(f"| {space} | {sampler} | {' | '.join(cells)} |")
    return "\n".join(lines)


def versus_random(rows: list[dict[str, Any]], spaces: list[str], samplers: list[str]) -> str:
    """Per space, trial count and sampler: its hypervolume minus random sampling's at the same seed (the
    samplers draw the same first trials from a seed, so seeds pair), and in how many seeds it is ahead."""
    hv = {(r["space"], r["sampler"], r["seed"], r["trial"]): r["hypervolume"] for r in rows}
    seeds = sorted({r["seed"] for r in rows})
    lines = ["| space | trials | sampler | minus random | ahead / tied / behind |", "|---|---|---|---|---|"]
    for space, trial, sampler in ((s, t, x) for s in spaces for t in CHECKPOINTS for x in samplers):
        paired = [k for k in seeds if (space, sampler, k, trial) in hv and (space, "random", k, trial) in hv]
        diffs = [hv[(space, sampler, k, trial)] - hv[(space, "random", k, trial)] for k in paired]
        if sampler != "random" and diffs:
            ahead, behind = sum(d > TIE for d in diffs), sum(d < -TIE for d in diffs)
            tally = f"{ahead} / {len(diffs) - ahead - behind} / {behind}"
            lines.append(f"| {space} | {trial} | {sampler} | {mean_std(diffs)} | {tally} |")
    return "\n".join(lines)


def report(rows: list[dict[str, Any]], spaces: list[str], samplers: list[str], path: Path) -> None:
    """Print mean ± std at the checkpoint trial counts and the trials needed; draw the plot."""
    at = [r for r in rows if r["trial"] in CHECKPOINTS]
    order = [(s, t, x) for s in spaces for t in CHECKPOINTS for x in samplers]
    print(summary_table(at, ("space", "trial", "sampler"), order, ["hypervolume", "best_val_accuracy"]))
    print(versus_random(rows, spaces, samplers))
    print(trials_needed(rows, spaces, samplers))
    plot(rows, path.with_suffix(".png"))
    print(f"plot: {path.with_suffix('.png')}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spaces", default=",".join(SPACES))
    parser.add_argument("--samplers", default=",".join(SAMPLERS))
    parser.add_argument("--seeds", default="0,1,2,3,4")
    parser.add_argument("--trials", type=int, default=40)
    parser.add_argument("--max-flops", type=float, default=0.5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "sampler_hypervolume.csv")
    parser.add_argument("--report-only", action="store_true", help="tables and plot from --out; no runs")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    spaces, samplers = args.spaces.split(","), args.samplers.split(",")
    if args.report_only:
        report(read_csv(args.out), spaces, samplers, args.out)
        return

    work = Path(tempfile.mkdtemp(prefix="bench-samplers-"))
    # the other spaces' rows of an earlier run stay, so spaces can be run one at a time into one CSV
    rows = [r for r in read_csv(args.out) if r["space"] not in spaces] if args.out.exists() else []
    for space in spaces:
        prepared = prepare(space, args, work)
        for seed in (int(s) for s in args.seeds.split(",")):
            for sampler in samplers:  # seeds outermost: a partial run has every sampler at equal seeds
                start = time.perf_counter()
                rows += study(prepared, sampler, seed, work / space)
                last = rows[-1]
                print(
                    f"{space} {sampler} seed {seed}: hypervolume {last['hypervolume']:.4f}, best val acc "
                    f"{last['best_val_accuracy']:.4f}, {time.perf_counter() - start:.0f} s",
                    flush=True,
                )
                write_csv(args.out, rows, COLUMNS)
        plot(rows, args.out.with_suffix(".png"))
    print(
        f"ResNet-20 / digits, fine-tune 1 epoch, budget {args.max_flops} FLOPs, {args.trials} trials, "
        f"seeds {args.seeds}, threads {args.threads}, torch {torch.__version__}"
    )
    report(rows, list(dict.fromkeys(r["space"] for r in rows)), samplers, args.out)


if __name__ == "__main__":
    main()
