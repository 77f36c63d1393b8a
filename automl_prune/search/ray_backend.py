"""Distributed search: the same trial function under Ray Tune, with Optuna as Ray's searcher.

Each Ray worker builds the prepared search once (the base model and the strategy's ``prepare`` come
from the on-disk caches the driver filled), runs trials, and reports the trial record back; the driver
calls the lifecycle hooks as results arrive, so tracking works the same as in-process.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ray import tune

from automl_prune.search.config import SearchConfig
from automl_prune.search.records import TrialRecord
from automl_prune.search.samplers import make_sampler
from automl_prune.search.setup import Prepared


def claim_trial_number(run_dir: Path) -> int:
    """The lowest free trial number, claimed atomically (mkdir) so concurrent workers never collide."""
    root = run_dir / "trials"
    root.mkdir(parents=True, exist_ok=True)
    number = 0
    while True:
        try:
            (root / f"{number:04d}").mkdir()
            return number
        except FileExistsError:
            number += 1


def _ray_trial(params: dict[str, Any], config: dict[str, Any]) -> None:
    """Ray Tune function trainable: one trial, reported as metrics plus the record as JSON."""
    import torch

    from automl_prune.search.setup import prepared_for
    from automl_prune.search.trial import run_trial

    torch.set_num_threads(1)
    search_config = SearchConfig.from_dict(config)
    prepared = prepared_for(search_config)
    record = run_trial(prepared, params, claim_trial_number(search_config.run_dir))
    nan = float("nan")
    tune.report(
        {
            "quality": record.quality if record.state == "complete" else nan,
            "flops": float(record.flops) if record.state == "complete" else nan,
            "record": json.dumps(record.to_dict()),
        }
    )


_LISTENERS: dict[str, Callable[[TrialRecord], None]] = {}


class ReportTrial(tune.Callback):
    """Hands each trial record to the driver's listener ``key`` as results arrive.

    Tuner pickles its run config (callbacks included), so the callback holds only the key.
    """

    def __init__(self, key: str) -> None:
        self.key = key

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        if "record" in result:
            _LISTENERS[self.key](TrialRecord.from_dict(json.loads(result["record"])))


def run_ray(prepared: Prepared, on_trial: Callable[[TrialRecord], None], n_trials: int) -> None:
    """Run ``n_trials`` through Ray Tune on a local Ray (default) or the cluster at ``config.address``."""
    import ray
    from ray.tune.search.optuna import OptunaSearch

    config = prepared.plan.config
    space = prepared.plan.space
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")  # results live in trials.jsonl
    if not ray.is_initialized():
        init: dict[str, Any] = {
            "include_dashboard": False,
            "log_to_driver": False,
            "configure_logging": False,
        }
        if config.address:
            init["address"] = config.address
        else:
            init["num_cpus"] = config.workers
        ray.init(**init)

    searcher = OptunaSearch(
        metric=["quality", "flops"],
        mode=["max", "min"],
        sampler=make_sampler(config.sampler, config.seed, config.trials),
        points_to_evaluate=[{n: p.default for n, p in space.searched.items()}] if space.searched else None,
    )
    trainable = tune.with_resources(tune.with_parameters(_ray_trial, config=config.to_dict()), {"cpu": 1})
    key = str(config.run_dir.resolve())
    _LISTENERS[key] = on_trial
    tuner = tune.Tuner(
        trainable,
        param_space=space.to_ray(),
        tune_config=tune.TuneConfig(
            search_alg=searcher, num_samples=n_trials, max_concurrent_trials=config.workers
        ),
        run_config=tune.RunConfig(
            name="ray",
            storage_path=str(config.run_dir.resolve()),
            verbose=0,
            callbacks=[ReportTrial(key)],
        ),
    )
    try:
        tuner.fit()
    finally:
        _LISTENERS.pop(key, None)
