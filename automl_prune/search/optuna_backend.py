"""In-process search with an Optuna study in SQLite, so a killed search resumes where it stopped."""

from __future__ import annotations

from collections.abc import Callable

import optuna
from optuna.trial import TrialState

from automl_prune.flops import constraint_value
from automl_prune.search.records import TrialRecord
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
    if not study.trials:
        study.enqueue_trial({n: p.default for n, p in prepared.plan.space.searched.items()})
    return study


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


def run_optuna(prepared: Prepared, on_trial: Callable[[TrialRecord], None]) -> None:
    """Run the trials still missing from the study; a failed trial is told FAIL and the search goes on."""
    config, space = prepared.plan.config, prepared.plan.space
    study = open_study(prepared)
    requeue_interrupted(study)
    remaining = max(0, config.trials - counted_trials(study))
    distributions = space.to_optuna()
    progress = prepared.context.progress
    for _ in progress.bar(range(remaining), desc=f"{prepared.plan.strategy.name} trials", leave=True):
        trial = ask_new(study, distributions)
        record = run_trial(prepared, {**space.fixed, **trial.params}, trial.number)
        if record.state == "complete":
            trial.set_constraint(CONSTRAINT, constraint_value(record.flops, prepared.plan.max_flops))
            study.tell(trial, [record.quality, record.flops])
        else:
            trial.set_user_attr("error", record.error)
            study.tell(trial, state=TrialState.FAIL)
        on_trial(record)
