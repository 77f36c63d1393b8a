"""Optuna samplers for two objectives (quality up, FLOPs down).

The FLOPs budget reaches them as a trial constraint (``Trial.set_constraint``, Optuna >= 5), which
both NSGA-II and TPE read, so infeasible trials are ranked behind feasible ones. ``random`` samples
each parameter independently and ignores both: the baseline that says whether the others' modelling pays
(benchmarks/sampler_hypervolume.py).
"""

from __future__ import annotations

import optuna

CONSTRAINT = "flops_over_budget"


def make_sampler(name: str, seed: int, n_trials: int) -> optuna.samplers.BaseSampler:
    """NSGA-II (population scaled to the trial count), multi-objective TPE, or random sampling."""
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=max(2, min(10, n_trials // 2)))
    return optuna.samplers.NSGAIISampler(seed=seed, population_size=max(4, min(50, n_trials // 2)))
