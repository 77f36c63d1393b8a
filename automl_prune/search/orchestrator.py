"""The search orchestrator: plan, prepare, run trials on a backend, write the Pareto front, notify plugins."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, fields, replace
from pathlib import Path
from typing import Any

from rich.console import Console

from automl_prune import __version__
from automl_prune.data.base import DataSplits
from automl_prune.errors import AutomlPruneError, SearchFailedError
from automl_prune.flops import Budget
from automl_prune.io import atomic_write_text
from automl_prune.latency import latency_convention
from automl_prune.plugins import get_plugins
from automl_prune.search import validate
from automl_prune.search.config import SearchConfig
from automl_prune.search.pareto import front_table, pareto_front, write_front
from automl_prune.search.records import SearchInfo, TrialRecord
from automl_prune.search.rundir import lock_run_dir, stored_origin
from automl_prune.search.setup import Plan, Prepared, plan_search, prepare_search, resolve_device
from automl_prune.tasks.base import Task

log = logging.getLogger(__name__)

SEARCH_FILE = "search.json"
TRIALS_FILE = "trials.jsonl"


@dataclass
class SearchResult:
    info: SearchInfo
    trials: list[TrialRecord]
    front: list[TrialRecord]


def load_records(run_dir: Path) -> list[TrialRecord]:
    """The trial records of ``run_dir``, their paths rooted at ``run_dir`` (they are stored relative)."""
    path = Path(run_dir) / TRIALS_FILE
    if not path.exists():
        return []
    records, origin = [], stored_origin(run_dir)
    for i, line in enumerate(_read_text(path).splitlines(), 1):
        if not line.strip():
            continue
        try:
            records.append(TrialRecord.from_stored(json.loads(line), run_dir, origin))
        except (json.JSONDecodeError, TypeError, KeyError, AttributeError) as exc:
            raise AutomlPruneError(
                f"{path} line {i} is not a trial record ({exc})",
                "restore the file from a copy of the run directory, or rerun the search to rewrite it",
            ) from None
    return records


def _read_text(path: Path) -> str:
    try:
        return path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise AutomlPruneError(f"cannot read {path}: {exc}", "restore the file or rerun the search") from None


def save_records(run_dir: Path, records: list[TrialRecord]) -> None:
    text = "".join(json.dumps(r.to_stored(run_dir)) + "\n" for r in records)
    atomic_write_text(Path(run_dir) / TRIALS_FILE, text)


def load_info(run_dir: Path) -> SearchInfo:
    path = Path(run_dir) / SEARCH_FILE
    if not path.exists():
        raise AutomlPruneError(
            f"{run_dir} holds no search ({SEARCH_FILE} is missing)",
            "give the --out directory of an earlier `automl-prune search`",
        )
    try:
        return SearchInfo.from_json(_read_text(path), run_dir=Path(run_dir))
    except (json.JSONDecodeError, TypeError, KeyError, AttributeError) as exc:
        raise AutomlPruneError(
            f"{path} is not a search record ({exc})", "restore it from a copy of the run directory"
        ) from None


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


# What defines a search: --resume refuses other values than the stored ones; not given, they are kept.
SEARCH_DEFINING = (
    "strategy",
    "model",
    "model_args",
    "data",
    "data_args",
    "weights",
    "space",
    "overrides",
    "max_flops",
    "seed",
    "base_epochs",
    "base_lr",
    "batch_size",
    "backend",
    "sampler",
    "name",
)
# What a resumed search may change (not given: the stored values); --trials only raises the count.
RESUME_MAY_CHANGE = (
    "trials",
    "workers",
    "address",
    "device",
    "tracking_uri",
    "registered_model",
    "compare",
    "quiet",
)
_OPTION = {"model_args": "--model-arg", "data_args": "--data-arg", "overrides": "--set", "name": "name"}


def _option(name: str) -> str:
    return _OPTION.get(name, "--" + name.replace("_", "-"))


def _same_path(a: str | None, b: str | None) -> bool:
    if a == b:
        return True
    if a is None or b is None:
        return False
    return Path(a).expanduser().resolve() == Path(b).expanduser().resolve()


def _same(name: str, given: Any, stored: Any) -> bool:
    if name in ("weights", "space"):
        return _same_path(given, stored)
    if name == "max_flops":
        try:
            return given == stored or Budget.parse(given) == Budget.parse(stored)
        except AutomlPruneError:
            return False
    if name == "overrides":
        return _overridden(given) == _overridden(stored)
    return given == stored


def _overridden(items: list[str] | None) -> dict[str, str]:
    """What ``--set`` items set (the last one of a name wins)."""
    return {k.strip(): v.strip() for k, _, v in (str(i).partition("=") for i in items or [])}


def given_options(config: SearchConfig) -> dict[str, Any]:
    """The settings of ``config`` that a Python caller set: those that differ from the defaults, and
    ``trials`` and ``quiet`` (a resumed search tops up to ``trials``)."""
    out: dict[str, Any] = {}
    for f in fields(SearchConfig):
        value = getattr(config, f.name)
        if f.default is not MISSING:
            default = f.default
        elif f.default_factory is not MISSING:
            default = f.default_factory()
        else:
            default = object()  # required: always given
        if value != default or f.name in ("trials", "quiet"):
            out[f.name] = value
    return out


def resume_config(run_dir: str | Path, given: Mapping[str, Any]) -> SearchConfig:
    """The search stored in ``run_dir`` with what ``given`` may change (:data:`RESUME_MAY_CHANGE`).

    ``given`` holds the options of this call that were given (the CLI leaves out those not on the
    command line). One that defines the search (:data:`SEARCH_DEFINING`) with another value than the
    stored search is refused, showing both; the stored ``out`` is replaced by ``run_dir`` (a moved or
    copied run directory resumes where it is now).
    """
    run_dir = Path(run_dir)
    info = load_info(run_dir)
    stored = SearchConfig.from_dict({**info.config, "out": str(run_dir)})
    stored = replace(stored, name=stored.name or info.name)
    differ = [
        (name, given[name], getattr(stored, name))
        for name in SEARCH_DEFINING
        if name in given and not _same(name, given[name], getattr(stored, name))
    ]
    if differ:
        shown = "; ".join(f"{_option(n)} {_show(g)} (stored: {_show(s)})" for n, g, s in differ)
        raise AutomlPruneError(
            f"--resume continues the search stored in {run_dir}, but this call changes it: {shown}",
            "drop these options to resume the stored search as it is, or give another --out to start a "
            "new search with them (nothing was changed)",
        )
    changes = {name: given[name] for name in RESUME_MAY_CHANGE if name in given}
    if "trials" in changes:
        changes["trials"] = max(int(changes["trials"]), stored.trials)
    return replace(stored, **changes)


def _show(value: Any) -> str:
    if value is None or value == [] or value == {}:
        return "none"
    if isinstance(value, (list, dict)):
        return json.dumps(value, sort_keys=True)
    return repr(value) if isinstance(value, str) else str(value)


def _absolute_inputs(config: SearchConfig) -> SearchConfig:
    """``--weights``, ``--space`` and ``--compare`` as absolute paths (they lie outside the run directory
    and must not depend on the directory a resume is started from)."""
    return replace(
        config,
        weights=_absolute(config.weights),
        space=_absolute(config.space),
        compare=[_absolute(c) for c in config.compare],
    )


def _absolute(path: str | None) -> str | None:
    return str(Path(path).expanduser().resolve()) if path and Path(path).expanduser().exists() else path


def conventions(device: str, task: Task, data: DataSplits) -> dict[str, str]:
    import torch

    report = task.report_convention(data)
    return {
        **({"report": report} if report else {}),
        "flops": task.flops_convention(),
        "flops_unit": task.flops_unit,
        "latency": latency_convention(resolve_device(device)),
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
    config = _absolute_inputs(resume_config(run_dir, given_options(config)) if resume else config)
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
        conventions=conventions(config.device, plan.task, plan.data),
        tracking_uri=config.tracking_uri,
        registered_model=config.registered_model,
    )
    hooks = get_plugins().hook
    hooks.check_search(search=info)
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
        lock.release()


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
