"""Distributed search: the same trial function under Ray Tune, with Optuna as Ray's searcher.

Each Ray worker builds the prepared search once (the base model and the strategy's ``prepare`` come
from the on-disk caches the driver filled), runs trials, and reports the trial record back; the driver
calls the lifecycle hooks as results arrive, so tracking works the same as in-process.

A resumed search hands Ray's searcher the trials it already ran (:class:`DistinctOptunaSearch`): the
sampler learns from them, and no parameter set that already ran (or is running) is proposed again, so a
resumed search tops up to ``--trials`` distinct trials, as the Optuna backend does.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState
from ray import tune
from ray.tune.search.optuna import OptunaSearch

from automl_prune.search.config import SearchConfig
from automl_prune.search.records import TrialRecord
from automl_prune.search.samplers import make_sampler
from automl_prune.search.setup import Prepared

log = logging.getLogger(__name__)
MAX_REPEATS = 20  # as the Optuna backend: after this many repeats in a row, the repeat is run anyway
MAX_RETRIES = 2  # a trial whose Ray worker died (its node lost, the process killed) is run again


def params_key(params: Mapping[str, Any], names: Iterable[str]) -> str:
    """A parameter set as a key: the values of the searched parameters ``names``."""
    return json.dumps({n: params.get(n) for n in sorted(names)}, sort_keys=True, default=str)


class DistinctOptunaSearch(OptunaSearch):
    """Ray's Optuna searcher, told the trials that ``finished`` before (a resumed search), and never
    proposing a parameter set that finished or is running: a repeat is told PRUNED (user attribute
    ``duplicate_of``) and the sampler asked again, at most :data:`MAX_REPEATS` times in a row."""

    def __init__(self, *args: Any, finished: Sequence[TrialRecord] = (), **kwargs: Any) -> None:
        self._finished = list(finished)
        self._seen: dict[str, Any] = {}
        super().__init__(*args, **kwargs)

    def _setup_study(self, mode: Any) -> None:
        super()._setup_study(mode)
        names = list(self._space or {})
        for record in self._finished:
            if not all(n in record.params for n in names):
                continue
            params = {n: record.params[n] for n in names}
            self._seen.setdefault(params_key(params, names), record.number)
            complete = (
                record.state == "complete"
                and record.quality is not None
                and record.flops is not None
                and math.isfinite(record.quality)
            )
            try:
                self._ot_study.add_trial(
                    optuna.trial.create_trial(
                        state=TrialState.COMPLETE if complete else TrialState.FAIL,
                        values=[float(record.quality), float(record.flops)] if complete else None,
                        params=params,
                        distributions=self._space,
                    )
                )
            except ValueError as exc:  # outside this space: still never repeated, just not learned from
                log.info("trial %d is not given to the sampler: %s", record.number, exc)

    def suggest(self, trial_id: str) -> dict | None:
        names = list(self._space or {})
        for _ in range(MAX_REPEATS):
            config = super().suggest(trial_id)
            key = params_key(config or {}, names)
            twin = self._seen.get(key)
            if config is None or twin is None:
                break
            ot_trial = self._ot_trials.pop(trial_id)
            ot_trial.set_user_attr("duplicate_of", str(twin))
            self._ot_study.tell(ot_trial, state=TrialState.PRUNED)
        else:
            config = super().suggest(trial_id)
            key = params_key(config or {}, names)
        self._seen.setdefault(key, trial_id)
        return config


def finished_keys(finished: Iterable[TrialRecord], names: Iterable[str]) -> set[str]:
    """The distinct searched parameter sets of ``finished`` trials (what counts toward ``--trials``)."""
    names = list(names)
    return {params_key(r.params, names) for r in finished}


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

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        """A trial Ray could not finish, even after :data:`MAX_RETRIES` retries (its worker or node died,
        so no record came back): recorded as failed under a new number, so that no trial goes missing
        from the records and MLflow. (A strategy's own errors come back as failed records instead.)"""
        if "record" in (trial.last_result or {}):  # it died after reporting: its record is in
            return
        lines = [line.strip() for line in (trial.get_error() or "").splitlines() if line.strip()]
        heads = [i for i, line in enumerate(lines) if line.startswith("Failure #")]  # one per try
        reason = lines[heads[-1] + 1] if heads and heads[-1] + 1 < len(lines) else "no error message"
        _LISTENERS[self.key](
            TrialRecord(
                number=claim_trial_number(Path(self.key)),
                state="failed",
                params=dict(trial.config),
                error=f"Ray could not finish the trial ({max(len(heads), 1)} tries): {reason}",
            )
        )


def run_ray(
    prepared: Prepared, on_trial: Callable[[TrialRecord], None], finished: Sequence[TrialRecord] = ()
) -> None:
    """Run the trials missing from ``finished`` (the records so far) up to ``config.trials`` distinct
    parameter sets, through Ray Tune on a local Ray (default) or the cluster at ``config.address``."""
    import ray

    config = prepared.plan.config
    space = prepared.plan.space
    n_trials = config.trials - len(finished_keys(finished, space.searched))
    if n_trials <= 0:
        return
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

    first = [{n: p.default for n, p in space.searched.items()}] if space.searched and not finished else None
    searcher = DistinctOptunaSearch(
        metric=["quality", "flops"],
        mode=["max", "min"],
        sampler=make_sampler(config.sampler, config.seed, config.trials),
        points_to_evaluate=first,
        finished=finished,
    )
    run_dir = config.run_dir.resolve()  # workers run in other directories
    worker_config = {**config.to_dict(), "out": str(run_dir)}
    trainable = tune.with_resources(tune.with_parameters(_ray_trial, config=worker_config), {"cpu": 1})
    key = str(run_dir)
    _LISTENERS[key] = on_trial
    tuner = tune.Tuner(
        trainable,
        param_space=space.to_ray(),
        tune_config=tune.TuneConfig(
            search_alg=searcher, num_samples=n_trials, max_concurrent_trials=config.workers
        ),
        run_config=tune.RunConfig(
            name="ray",
            storage_path=str(run_dir),
            verbose=0,
            callbacks=[ReportTrial(key)],
            failure_config=tune.FailureConfig(max_failures=MAX_RETRIES),
        ),
    )
    try:
        tuner.fit()
    finally:
        _LISTENERS.pop(key, None)
