"""MLflow tracking, a plugin on the lifecycle hooks (registered through the ``mlflow`` entry point).

- ``check_search`` checks the store answers, before the base model is trained;
- ``search_started`` starts the search's parent run (reopens it when the search is resumed);
- ``trial_finished`` logs the trial as a nested run of it;
- ``search_finished`` logs the trials still missing and ``pareto.csv`` / ``pareto.png`` on the parent, ends
  it and promotes the best Pareto point under the budget (:mod:`automl_prune.tracking.registry`);
- ``search_failed`` ends the parent run FAILED (KILLED when interrupted), with the error as a tag, and
  promotes nothing.

Every hook builds its own client and checks the store before its first write; the store is described in
:mod:`automl_prune.tracking.store`, the run layout in :mod:`automl_prune.tracking.runs`.

The hooks run in the search that built its models from the user's own ``--model``, so they log a model
built from a ``module:factory`` as an MLflow model too (``trust_code=True``: it is run once for the
signature); ``automl-prune promote`` of an earlier run directory does not trust its files that way.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from automl_prune.hookspecs import hookimpl
from automl_prune.tracking.runs import (
    ensure_experiment,
    ensure_parent_run,
    log_batch,
    log_trial,
    parent_run,
    read_parent_run_id,
    trial_runs,
)
from automl_prune.tracking.store import (
    check_reachable,
    get_client,
    open_client,
    redact,
    resolve_tracking_uri,
    tracking_errors,
)

if TYPE_CHECKING:
    from automl_prune.search.records import SearchInfo, TrialRecord

log = logging.getLogger(__name__)


@hookimpl
def check_search(search: SearchInfo) -> None:
    """Fail before any training when the tracking store cannot be reached (nothing is created)."""
    check_reachable(resolve_tracking_uri(search), create=False)


@hookimpl
def search_started(search: SearchInfo) -> None:
    """Check the store, then start (or, for a resumed search, reopen) the search's parent run."""
    uri, client = open_client(search)
    with tracking_errors(uri, "starting the parent run"):
        run_id = ensure_parent_run(client, search, uri)
    log.info("MLflow: search %s tracked in %s (parent run %s)", search.name, redact(uri), run_id)


@hookimpl
def trial_finished(search: SearchInfo, trial: TrialRecord) -> None:
    """Log one nested run for ``trial`` under the search's parent run (by explicit ids)."""
    uri, client = open_client(search)
    with tracking_errors(uri, f"logging trial {trial.number}"):
        experiment_id = ensure_experiment(client, search, uri)
        parent_id = parent_run(client, search, uri, experiment_id)
        log_trial(client, search, experiment_id, parent_id, trial, trust_code=True)


@hookimpl
def search_failed(search: SearchInfo, error: BaseException) -> None:
    """End the parent run FAILED (KILLED for an interrupt), tagged with the error; one that was never
    started is not created. Problems of the store are logged, never raised: the search's own error
    is what the user must see."""
    status = "KILLED" if isinstance(error, KeyboardInterrupt) else "FAILED"
    uri = resolve_tracking_uri(search)
    try:
        run_id = read_parent_run_id(search.run_dir)
        if run_id is None:
            return
        check_reachable(uri)
        client = get_client(uri)
        text = str(getattr(error, "problem", "") or error or type(error).__name__)
        client.set_tag(run_id, "error", redact(text)[:5000])
        client.set_terminated(run_id, status)
    except Exception as exc:  # a failing store must not hide the search's error
        log.warning("MLflow: could not mark the parent run %s in %s: %s", status, redact(uri), exc)


@hookimpl
def search_finished(search: SearchInfo, trials: list[TrialRecord], front: list[TrialRecord]) -> str:
    """Log the Pareto front on the parent run, end it, promote the best point under the budget, and
    return the decision as a line for the terminal."""
    from automl_prune.tracking.registry import promote

    uri, client = open_client(search)
    with tracking_errors(uri, "finishing the parent run"):
        experiment_id = ensure_experiment(client, search, uri)
        parent_id = parent_run(client, search, uri, experiment_id)
        logged = trial_runs(client, experiment_id, parent_id)
        for trial in trials:  # trials whose logging never reached this store, or was cut off (kill -9)
            run = logged.get(trial.number)
            if run is None or run.info.status == "RUNNING":
                log_trial(client, search, experiment_id, parent_id, trial, trust_code=True)
        run_dir = Path(search.run_dir)
        for name in ("pareto.csv", "pareto.png"):
            if (run_dir / name).is_file():
                client.log_artifact(parent_id, str(run_dir / name))
        n_failed = sum(t.state != "complete" for t in trials)
        log_batch(
            client,
            parent_id,
            metrics={"n_trials": len(trials), "n_failed": n_failed, "pareto_size": len(front)},
            tags={"pareto_trials": ",".join(str(t.number) for t in front)},
        )
        client.set_terminated(parent_id, "FINISHED")
    with tracking_errors(uri, "promoting the best Pareto point"):
        decision = promote(client, search, front, trials, trust_code=True)
    log.info("MLflow promotion: %s", decision.summary())
    return f"MLflow ({redact(uri)}): {decision.summary()}"
