"""The search orchestrator: plan, prepare, run trials on a backend, write the Pareto front, notify plugins."""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

from rich.console import Console

from automl_prune import __version__
from automl_prune.data.base import DataSplits
from automl_prune.errors import AutomlPruneError
from automl_prune.io import atomic_write_text
from automl_prune.latency import latency_convention
from automl_prune.plugins import get_plugins
from automl_prune.search.config import SearchConfig
from automl_prune.search.pareto import front_table, pareto_front, write_front
from automl_prune.search.records import SearchInfo, TrialRecord
from automl_prune.search.setup import plan_search, prepare_search, resolve_device
from automl_prune.tasks.base import Task

SEARCH_FILE = "search.json"
TRIALS_FILE = "trials.jsonl"


@dataclass
class SearchResult:
    info: SearchInfo
    trials: list[TrialRecord]
    front: list[TrialRecord]


def load_records(run_dir: Path) -> list[TrialRecord]:
    path = run_dir / TRIALS_FILE
    if not path.exists():
        return []
    return [TrialRecord.from_dict(json.loads(line)) for line in path.read_text().splitlines() if line.strip()]


def save_records(run_dir: Path, records: list[TrialRecord]) -> None:
    atomic_write_text(run_dir / TRIALS_FILE, "".join(json.dumps(r.to_dict()) + "\n" for r in records))


def load_info(run_dir: Path) -> SearchInfo:
    path = Path(run_dir) / SEARCH_FILE
    if not path.exists():
        raise AutomlPruneError(
            f"{run_dir} holds no search ({SEARCH_FILE} is missing)",
            "give the --out directory of an earlier `automl-prune search`",
        )
    return SearchInfo.from_json(path.read_text())


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


def _resume_config(config: SearchConfig) -> SearchConfig:
    """The stored config of the search in ``config.out``, with this call's trial count and verbosity."""
    stored = SearchConfig.from_dict(load_info(config.run_dir).config)
    return replace(stored, trials=max(config.trials, stored.trials), quiet=config.quiet)


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


def run_search(config: SearchConfig, *, resume: bool = False, console: Console | None = None) -> SearchResult:
    """Run (or resume) a search and return its trials and Pareto front."""
    console = console or Console(quiet=config.quiet)
    run_dir = config.run_dir
    if (run_dir / SEARCH_FILE).exists() and not resume:
        raise AutomlPruneError(
            f"{run_dir} already holds a search",
            "pass --resume to continue it, or choose another --out directory (nothing was changed)",
        )
    if resume:
        config = _resume_config(config)
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
    run_dir.mkdir(parents=True, exist_ok=True)
    prepared = prepare_search(plan)
    info.base = prepared.base
    atomic_write_text(run_dir / SEARCH_FILE, info.to_json())
    hooks.search_started(search=info)
    records = load_records(run_dir)

    def on_trial(record: TrialRecord) -> None:
        records.append(record)
        save_records(run_dir, records)
        if record.state == "failed":
            console.print(f"[yellow]trial {record.number} failed:[/] {record.error}")
        hooks.trial_finished(search=info, trial=record)

    if config.backend == "ray":
        from automl_prune.search.ray_backend import run_ray

        run_ray(prepared, on_trial, n_trials=max(0, config.trials - len(records)))
    else:
        from automl_prune.search.optuna_backend import run_optuna

        run_optuna(prepared, on_trial)
    records.sort(key=lambda r: r.number)
    save_records(run_dir, records)
    front = pareto_front(records)
    write_front(run_dir, records, front, info, baseline_fronts(config.compare, info))
    console.print(front_table(front, info, len(records)))
    console.print(f"wrote {run_dir / 'pareto.csv'} and {run_dir / 'pareto.png'}")
    for line in hooks.search_finished(search=info, trials=records, front=front):
        if line:
            console.print(line, soft_wrap=True, highlight=False)
    return SearchResult(info, records, front)
