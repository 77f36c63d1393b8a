"""The search orchestrator: plan, prepare, run trials on a backend, write the Pareto front, notify plugins."""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

from automl_prune import __version__
from automl_prune.data.base import DataSplits
from automl_prune.errors import AutomlPruneError, SearchFailedError
from automl_prune.io import atomic_write_text
from automl_prune.latency import latency_convention
from automl_prune.plugins import get_plugins
from automl_prune.search import validate
from automl_prune.search.config import SearchConfig
from automl_prune.search.pareto import front_table, pareto_front, write_front
from automl_prune.search.records import (
    SEARCH_FILE,
    SearchInfo,
    TrialRecord,
    load_info,
    load_records,
    save_records,
)
from automl_prune.search.resume import absolute_inputs, given_options, resume_config
from automl_prune.search.rundir import lock_run_dir, stored_origin
from automl_prune.search.setup import Plan, Prepared, plan_search, prepare_search, resolve_device
from automl_prune.tasks.base import Task

log = logging.getLogger(__name__)


@dataclass
class SearchResult:
    info: SearchInfo
    trials: list[TrialRecord]
    front: list[TrialRecord]


def baseline_fronts(run_dirs: list[str], info: SearchInfo) -> list[tuple[str, list[TrialRecord]]]:
    """The Pareto fronts of earlier searches on the same model and data, labelled for a plot."""
    fronts = []
    for run_dir in run_dirs:
        other = load_info(Path(run_dir))
        same = all(other.config.get(k) == info.config.get(k) for k in ("model", "data", "weights"))
        if not same:
            raise AutomlPruneError(
                f"--compare {run_dir} searched {other.config.get('model')} on {other.config.get('data')}, "
                f"not {info.config.get('model')} on {info.config.get('data')}",
                "compare only searches that pruned the same base model",
            )
        fronts.append((f"{other.strategy} ({Path(run_dir).name})", pareto_front(load_records(Path(run_dir)))))
    return fronts


def conventions(
    device: str, task: Task, data: DataSplits, latency_budget_s: float | None = None
) -> dict[str, str]:
    import torch

    report = task.report_convention(data)
    return {
        **({"report": report} if report else {}),
        "flops": task.flops_convention(),
        "flops_unit": task.flops_unit,
        "latency": latency_convention(resolve_device(device), latency_budget_s),
        "quality": "validation split (model selection never uses the test split)",
        "versions": f"automl_prune {__version__}, torch {torch.__version__}",
    }


def _already_holds(run_dir: Path) -> AutomlPruneError:
    return AutomlPruneError(
        f"{run_dir} already holds a search",
        "pass --resume to continue it, or choose another --out directory (nothing was changed)",
    )


def all_failed(run_dir: Path, records: list[TrialRecord]) -> SearchFailedError:
    """The error of a search whose every trial failed: the first failure's reason (exit status 3)."""
    first = min(records, key=lambda r: r.number)
    return SearchFailedError(
        f"all {len(records)} trials failed; the first (trial {first.number}) with: {first.error}",
        f"fix its cause (traceback in {run_dir / 'trials' / f'{first.number:04d}' / 'error.txt'}) and run "
        "the search again in a new --out directory",
    )


def run_search(config: SearchConfig, *, resume: bool = False, console: Console | None = None) -> SearchResult:
    """Run (or resume) a search and return its trials and Pareto front.

    Resuming continues the search stored in ``config.out`` (:func:`resume_config`: the settings of
    ``config`` that define the search must be the stored ones). The run directory is locked from the
    moment it is created until the search ends (:mod:`automl_prune.search.rundir`).
    """
    console = console or Console(quiet=config.quiet)
    run_dir = config.run_dir
    if (run_dir / SEARCH_FILE).exists() and not resume:
        raise _already_holds(run_dir)
    config = absolute_inputs(resume_config(run_dir, given_options(config)) if resume else config)
    validate.check_output_dir(run_dir)  # before any work, like everything plan_search checks
    validate.check_compare(config.compare, config.to_dict())
    plan = plan_search(config)
    info = SearchInfo(
        name=config.search_name,
        strategy=config.strategy,
        run_dir=run_dir.resolve(),
        quality_metric=plan.task.quality_metric,
        base={},
        max_flops=plan.max_flops,
        config=config.to_dict(),
        conventions=conventions(config.device, plan.task, plan.data, config.latency_budget_s),
        tracking_uri=config.tracking_uri,
        registered_model=config.registered_model,
    )
    hooks = get_plugins().hook
    hooks.check_search(search=info)
    created = not run_dir.exists()
    lock = lock_run_dir(run_dir, "search")  # creates the run directory; nothing is written before it
    try:
        if (run_dir / SEARCH_FILE).exists() and not resume:  # another search started and ended meanwhile
            raise _already_holds(run_dir)
        if lock.previous is not None:
            console.print(f"[yellow]took over the stale lock of {lock.previous.describe()}[/]")
        if resume and stored_origin(run_dir) is not None:  # written with absolute paths: store them relative
            save_records(run_dir, load_records(run_dir))
        return _run_locked(config, plan, info, console)
    finally:
        stored = (run_dir / SEARCH_FILE).exists()
        lock.release()
        if created and not stored:  # failed before the search was stored (base training): leave nothing
            shutil.rmtree(run_dir, ignore_errors=True)


def _run_locked(config: SearchConfig, plan: Plan, info: SearchInfo, console: Console) -> SearchResult:
    run_dir = config.run_dir
    hooks = get_plugins().hook
    prepared = prepare_search(plan)
    info.base = prepared.base
    atomic_write_text(run_dir / SEARCH_FILE, info.to_json())
    hooks.search_started(search=info)
    try:
        return _run_trials(config, prepared, info, console)
    except BaseException as exc:  # the search's MLflow run ends FAILED (KILLED when interrupted)
        try:
            hooks.search_failed(search=info, error=exc)
        except Exception as hook_error:  # never hide the error that stopped the search
            log.warning("a search_failed hook failed: %s", hook_error)
        raise


def _run_trials(config: SearchConfig, prepared: Prepared, info: SearchInfo, console: Console) -> SearchResult:
    run_dir = config.run_dir
    hooks = get_plugins().hook
    records = load_records(run_dir)

    def on_trial(record: TrialRecord) -> None:
        records.append(record)
        save_records(run_dir, records)
        if record.state == "failed":
            console.print(f"[yellow]trial {record.number} failed:[/] {record.error}")
        hooks.trial_finished(search=info, trial=record)

    if config.backend == "ray":
        from automl_prune.search.ray_backend import run_ray

        run_ray(prepared, on_trial, finished=list(records))
    else:
        from automl_prune.search.optuna_backend import run_optuna

        run_optuna(prepared, on_trial)
    records.sort(key=lambda r: r.number)
    save_records(run_dir, records)
    if records and all(r.state != "complete" for r in records):
        raise all_failed(run_dir, records)
    front = pareto_front(records)
    write_front(run_dir, records, front, info, baseline_fronts(config.compare, info))
    console.print(front_table(front, info, len(records)))
    console.print(f"wrote {run_dir / 'pareto.csv'} and {run_dir / 'pareto.png'}")
    for line in hooks.search_finished(search=info, trials=records, front=front):
        if line:
            console.print(line, soft_wrap=True, highlight=False)
    return SearchResult(info, records, front)
