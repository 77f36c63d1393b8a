"""In-process search with an Optuna study in SQLite, so a killed search resumes where it stopped.

The study is readable in optuna-dashboard (``optuna-dashboard sqlite:///RUN_DIR/study.db``): the two
objectives are named (``val_<quality metric>`` and ``flops``), each complete trial carries its test
metrics, parameter count, latency and model directory as user attributes, and the FLOPs budget is a
trial constraint (:meth:`optuna.trial.Trial.set_constraint`), which Optuna's samplers, Pareto front and
plots read to tell feasible from infeasible trials.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from typing import Any

import optuna
from optuna.trial import TrialState

from automl_prune.flops import constraint_value
from automl_prune.search.records import TrialRecord
from automl_prune.search.rundir import stored_path
from automl_prune.search.samplers import CONSTRAINT, make_sampler
from automl_prune.search.setup import Prepared
from automl_prune.search.trial import run_trial

MAX_REPEATS = 20


def open_study(prepared: Prepared) -> optuna.Study:
    config = prepared.plan.config
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = f"sqlite:///{config.run_dir.resolve() / 'study.db'}"
    study = optuna.create_study(
        study_name=config.search_name,
        storage=storage,
        directions=["maximize", "minimize"],
        sampler=make_sampler(config.sampler, config.seed, config.trials),
        load_if_exists=True,
    )
    names = metric_names(prepared.plan.task.quality_metric)
    if study.metric_names != names:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names(names)
    if not study.trials:
        study.enqueue_trial({n: p.default for n, p in prepared.plan.space.searched.items()})
    return study


def metric_names(quality_metric: str) -> list[str]:
    """The study's objective names, in the order of its directions (quality up, FLOPs down)."""
    return [f"val_{quality_metric}", "flops"]


def trial_attrs(record: TrialRecord, run_dir: Any) -> dict[str, Any]:
    """What a complete trial shows as user attributes besides its objectives: test metrics, parameter
    count, latency (median, IQR, speed-up over the base, noisy flag), feasibility and the model
    directory (relative to the run directory)."""
    attrs: dict[str, Any] = {
        "n_params": record.n_params,
        "latency_ms": record.latency_ms,
        "latency_iqr_ms": record.latency_iqr_ms,
        "speedup": record.speedup,
        "latency_noisy": record.latency_noisy,
        "feasible": record.feasible,
        "model_dir": stored_path(record.model_dir, run_dir),
    }
    attrs.update(record.metrics)
    return {
        k: v
        for k, v in attrs.items()
        if v is not None and not (isinstance(v, float) and not math.isfinite(v))
    }


def requeue_interrupted(study: optuna.Study) -> int:
    """Trials left RUNNING by a killed process are failed and their parameters queued again."""
    interrupted = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.RUNNING]
    for t in interrupted:
        study.tell(t.number, state=TrialState.FAIL)
        study.set_user_attr(f"interrupted_{t.number}", True)
        study.enqueue_trial(t.params)
    return len(interrupted)


def ask_new(study: optuna.Study, distributions: dict) -> optuna.trial.Trial:
    """A trial whose parameters no completed trial had: small NSGA-II populations repeat themselves.

    A repeat is told PRUNED (tagged ``duplicate_of``), does not count as a trial, and the sampler is
    asked again; after :data:`MAX_REPEATS` repeats in a row the repeat is run anyway.
    """
    seen = {
        tuple(sorted(t.params.items())): t.number
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    }
    for _ in range(MAX_REPEATS):
        trial = study.ask(distributions)
        twin = seen.get(tuple(sorted(trial.params.items())))
        if twin is None:
            return trial
        trial.set_user_attr("duplicate_of", twin)
        study.tell(trial, state=TrialState.PRUNED)
    return study.ask(distributions)


def counted_trials(study: optuna.Study) -> int:
    """Finished trials that count toward the budget: not interrupted (re-queued) and not repeats."""
    interrupted = {int(k.split("_")[1]) for k in study.user_attrs if k.startswith("interrupted_")}
    return sum(
        t.state.is_finished() and t.number not in interrupted and "duplicate_of" not in t.user_attrs
        for t in study.get_trials(deepcopy=False)
    )


def run_optuna(prepared: Prepared, on_trial: Callable[[TrialRecord], None], *, measure: bool = True) -> None:
    """Run the trials still missing from the study; a failed trial is told FAIL and the search goes on.

    ``measure=False``: trials without latency, figures or saved models (:func:`run_trial`), for
    measuring the search itself (benchmarks/sampler_hypervolume.py); the sampler sees the same values.
    """
    config, space = prepared.plan.config, prepared.plan.space
    study = open_study(prepared)
    requeue_interrupted(study)
    remaining = max(0, config.trials - counted_trials(study))
    distributions = space.to_optuna()
    progress = prepared.context.progress
    for _ in progress.bar(range(remaining), desc=f"{prepared.plan.strategy.name} trials", leave=True):
        trial = ask_new(study, distributions)
        record = run_trial(prepared, {**space.fixed, **trial.params}, trial.number, measure=measure)
        if record.state == "complete":
            trial.set_constraint(CONSTRAINT, constraint_value(record.flops, prepared.plan.max_flops))
            for key, value in trial_attrs(record, config.run_dir).items():
                trial.set_user_attr(key, value)
            study.tell(trial, [record.quality, record.flops])
        else:
            trial.set_user_attr("error", record.error)
            study.tell(trial, state=TrialState.FAIL)
        on_trial(record)
