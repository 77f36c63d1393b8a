"""Logging a search to MLflow runs.

- experiment ``automl-prune/<search name>``; one parent run per search, reopened when the search is
  resumed (its id is kept in ``<run_dir>/mlflow_parent_run_id``); one nested run per trial, tagged
  ``trial_number``, with the pruned model as its MLflow model ``model`` (``runs:/<run_id>/model``, a
  pyfunc: :mod:`automl_prune.tracking.pyfunc`) and the trial's figures under ``figures/``.
- nothing here holds MLflow state between calls: runs are addressed by explicit id (the parent's from the
  run directory, a trial's by its ``trial_number`` tag), never through MLflow's active-run stack. So trial
  results may arrive in any process (a Ray driver, a resumed search) and a trial reported twice is logged
  once.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import logging
import math
import platform
import re
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from automl_prune.io import atomic_write_text
from automl_prune.tracking.store import artifact_location, mlflow_setting, redact

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities import Run

    from automl_prune.search.records import SearchInfo, TrialRecord

log = logging.getLogger(__name__)

PARENT_RUN_ID_FILE = "mlflow_parent_run_id"
EXPERIMENT_PREFIX = "automl-prune/"
PARENT_TAG = "mlflow.parentRunId"

# MLflow's limits (mlflow.utils.validation): longer values are truncated, batches are chunked.
_MAX_PARAM_VAL = 6000
_MAX_TAG_VAL = 8000
_MAX_KEY = 250
_BATCH_PARAMS_TAGS = 100
_BATCH_METRICS = 1000
_VERSIONED = ("automl-prune", "torch", "torchvision", "torch-pruning", "fvcore", "optuna", "ray", "mlflow")


# ------------------------------------------------------------------------------------- small helpers


def _key(name: str) -> str:
    """An MLflow-safe key: alphanumerics, ``_ - . / space``; other characters become ``_``."""
    return re.sub(r"[^\w\-. /]", "_", str(name))[:_MAX_KEY] or "_"


def _str(value: Any, limit: int) -> str:
    if isinstance(value, str):
        text = redact(value)
    elif isinstance(value, (int, float, bool)) or value is None:
        text = str(value)
    else:
        text = redact(json.dumps(value, sort_keys=True, default=str))
    return text if len(text) <= limit else text[: limit - 3] + "..."


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dicts become dotted keys (``{"a": {"b": 1}}`` -> ``{"a.b": 1}``); lists stay values."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(flatten(v, f"{key}."))
        else:
            out[key] = v
    return out


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)):
        return float(value)
    try:  # numpy / torch scalars
        return float(value.item())
    except (AttributeError, TypeError, ValueError):
        return None


def log_batch(
    client: MlflowClient,
    run_id: str,
    params: dict[str, Any] | None = None,
    metrics: dict[str, Any] | None = None,
    tags: dict[str, Any] | None = None,
    model_id: str | None = None,
) -> None:
    """Log in MLflow-sized batches; None and non-numeric metric values are skipped. Metrics with a
    ``model_id`` are also the metrics of that logged model (MLflow 3's model views show them)."""
    from mlflow.entities import Metric, Param, RunTag

    now = int(time.time() * 1000)
    p = [Param(_key(k), _str(v, _MAX_PARAM_VAL)) for k, v in (params or {}).items()]
    t = [RunTag(_key(k), _str(v, _MAX_TAG_VAL)) for k, v in (tags or {}).items() if v is not None]
    m = []
    for k, v in (metrics or {}).items():
        x = _number(v)
        if x is not None:
            m.append(Metric(_key(k), x, now, 0, model_id=model_id))
    for i in range(0, len(p), _BATCH_PARAMS_TAGS):
        client.log_batch(run_id, params=p[i : i + _BATCH_PARAMS_TAGS])
    for i in range(0, len(t), _BATCH_PARAMS_TAGS):
        client.log_batch(run_id, tags=t[i : i + _BATCH_PARAMS_TAGS])
    for i in range(0, len(m), _BATCH_METRICS):
        client.log_batch(run_id, metrics=m[i : i + _BATCH_METRICS])


def _versions() -> dict[str, str]:
    out = {"version.python": platform.python_version()}
    for dist in _VERSIONED:
        module = sys.modules.get(dist.replace("-", "_"))
        version = getattr(module, "__version__", None)  # torch's carries the build: 2.x.y+cpu
        if isinstance(version, str):
            out[f"version.{dist}"] = version
            continue
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            out[f"version.{dist}"] = importlib.metadata.version(dist)
    return out


def _quiet_run_links() -> contextlib.AbstractContextManager[None]:
    """MLflow prints two 'View run' lines per ended run on HTTP stores; keep them for the parent only."""
    return mlflow_setting("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")


# ------------------------------------------------------------------------------- experiment and runs


#: MLflow 3's UI opens an experiment in its classic model-training view (runs, metrics, charts) rather
#: than the GenAI one (traces, prompts) when it carries this tag.
CLASSIC_VIEW = {"mlflow.experimentKind": "custom_model_development"}


def experiment_name(search: SearchInfo) -> str:
    return f"{EXPERIMENT_PREFIX}{search.name}"


def ensure_experiment(client: MlflowClient, search: SearchInfo, uri: str) -> str:
    """The id of ``automl-prune/<search name>``, created (or restored from the trash) when needed."""
    from mlflow.exceptions import MlflowException

    name = experiment_name(search)
    exp = client.get_experiment_by_name(name)
    if exp is None:
        try:
            return client.create_experiment(name, artifact_location=artifact_location(uri), tags=CLASSIC_VIEW)
        except MlflowException:  # created meanwhile by another process
            exp = client.get_experiment_by_name(name)
            if exp is None:
                raise
    if exp.lifecycle_stage == "deleted":
        client.restore_experiment(exp.experiment_id)
    for key, value in CLASSIC_VIEW.items():
        if exp.tags.get(key) != value:  # made by an older automl_prune, or by hand
            client.set_experiment_tag(exp.experiment_id, key, value)
    return exp.experiment_id


def parent_run_id_path(run_dir: str | Path) -> Path:
    return Path(run_dir) / PARENT_RUN_ID_FILE


def read_parent_run_id(run_dir: str | Path) -> str | None:
    path = parent_run_id_path(run_dir)
    if not path.is_file():
        return None
    text = path.read_text().strip()
    return text or None


def existing_parent_run(client: MlflowClient, run_id: str | None, experiment_id: str) -> Run | None:
    from mlflow.exceptions import MlflowException

    if run_id is None:
        return None
    try:
        run = client.get_run(run_id)
    except MlflowException as exc:  # only "no such run": a store that is down must not fork the parent
        if exc.error_code not in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            raise
        log.warning("parent run %s is not in this tracking store; starting a new one", run_id)
        return None
    if run.info.experiment_id != experiment_id or run.info.lifecycle_stage != "active":
        log.warning("parent run %s is deleted or in another experiment; starting a new one", run_id)
        return None
    return run


def parent_params(search: SearchInfo) -> dict[str, Any]:
    """Strategy, model, data, budget and quality metric, plus every config entry (flattened)."""
    config = search.config or {}
    params = flatten(config)
    params["strategy"] = search.strategy
    params.setdefault("model", config.get("model"))
    params.setdefault("data", config.get("data"))
    params["budget_max_flops"] = search.max_flops
    params["quality_metric"] = search.quality_metric
    params["search_name"] = search.name
    return params


def parent_tags(search: SearchInfo) -> dict[str, Any]:
    config, conv = search.config or {}, search.conventions or {}
    tags: dict[str, Any] = {f"convention.{k}": v for k, v in conv.items()}
    tags.update(_versions())
    tags.update(
        {
            "automl_prune.search": search.name,
            "automl_prune.strategy": search.strategy,
            "automl_prune.run_dir": str(Path(search.run_dir).resolve()),
            "quality_metric": search.quality_metric,
            "seed": config.get("seed", conv.get("seed")),
            "device": config.get("device", conv.get("device")),
        }
    )
    return tags


#: The record fields logged under the name a reader can tell apart: the quality is the validation
#: metric, and FLOPs are fvcore multiply-adds (MACs).
_RENAMED = {"quality": "val_{metric}", "flops": "macs"}


def _named(key: str, search: SearchInfo) -> str:
    return _RENAMED.get(key, key).format(metric=search.quality_metric)


def base_metrics(search: SearchInfo) -> dict[str, Any]:
    """The base model's measurements, one metric per fact (``base_val_accuracy``, ``base_macs``, ...)."""
    return {f"base_{_named(k, search)}": v for k, v in (search.base or {}).items()}


def parent_run(client: MlflowClient, search: SearchInfo, uri: str, experiment_id: str) -> str:
    """The id of the search's parent run for a hook other than ``search_started`` (made if missing)."""
    run = existing_parent_run(client, read_parent_run_id(search.run_dir), experiment_id)
    if run is None:
        return ensure_parent_run(client, search, uri)
    return run.info.run_id


def ensure_parent_run(client: MlflowClient, search: SearchInfo, uri: str, *, reopen: bool = True) -> str:
    """The parent run of ``search``: the one named in the run directory if this store has it, else a new one.

    A reopened run is set back to RUNNING when ``reopen``; its params are immutable in MLflow, so only
    params it lacks are logged and a changed value is recorded as a ``resume.changed.<key>`` tag.
    The id is written atomically to ``<run_dir>/mlflow_parent_run_id``.
    """
    experiment_id = ensure_experiment(client, search, uri)
    run = existing_parent_run(client, read_parent_run_id(search.run_dir), experiment_id)
    params = {_key(k): _str(v, _MAX_PARAM_VAL) for k, v in parent_params(search).items()}
    if run is not None:
        run_id = run.info.run_id
        old = run.data.params
        changed = {f"resume.changed.{k}": v for k, v in params.items() if k in old and old[k] != v}
        tags: dict[str, Any] = dict(changed)
        tags["automl_prune.run_dir"] = str(Path(search.run_dir).resolve())  # it may have moved
        if reopen:
            tags["resume.count"] = int(run.data.tags.get("resume.count", "0")) + 1
            client.update_run(run_id, status="RUNNING")
        log_batch(client, run_id, params={k: v for k, v in params.items() if k not in old}, tags=tags)
        return run_id
    run = client.create_run(experiment_id, run_name=search.name, tags={"automl_prune.role": "search"})
    run_id = run.info.run_id
    log_batch(client, run_id, params=params, metrics=base_metrics(search), tags=parent_tags(search))
    Path(search.run_dir).mkdir(parents=True, exist_ok=True)
    atomic_write_text(parent_run_id_path(search.run_dir), run_id + "\n")
    return run_id


def trial_runs(client: MlflowClient, experiment_id: str, parent_id: str) -> dict[int, Run]:
    """The nested runs of a parent by trial number (the newest one when a number appears twice)."""
    from mlflow.entities import ViewType

    out: dict[int, Run] = {}
    token = None
    while True:
        page = client.search_runs(
            [experiment_id],
            filter_string=f"tags.`{PARENT_TAG}` = '{parent_id}'",
            run_view_type=ViewType.ACTIVE_ONLY,
            max_results=1000,
            page_token=token,
            order_by=["attributes.start_time ASC"],
        )
        for run in page:
            number = run.data.tags.get("trial_number")
            if number is not None and number.lstrip("-").isdigit():
                out[int(number)] = run
        token = page.token
        if not token:
            return out


def find_trial_run(client: MlflowClient, experiment_id: str, parent_id: str, number: int) -> Run | None:
    from mlflow.entities import ViewType

    runs = client.search_runs(
        [experiment_id],
        filter_string=f"tags.`{PARENT_TAG}` = '{parent_id}' and tags.trial_number = '{int(number)}'",
        run_view_type=ViewType.ACTIVE_ONLY,
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    return runs[0] if runs else None


def trial_metrics(search: SearchInfo, trial: TrialRecord) -> dict[str, Any]:
    """One metric per fact: the validation quality once (``val_<metric>``, as the strategy scored it),
    FLOPs as ``macs`` (fvcore multiply-adds) and as ``flops_ratio`` to the base model's."""
    metrics: dict[str, Any] = dict(trial.metrics or {})
    metrics.setdefault(_named("quality", search), trial.quality)
    base = (search.base or {}).get("flops")
    metrics.update(
        {
            "macs": trial.flops,
            "flops_ratio": trial.flops / base if trial.flops is not None and base else None,
            "n_params": trial.n_params,
            "latency_ms": trial.latency_ms,
            "latency_iqr_ms": trial.latency_iqr_ms,
            "speedup": trial.speedup,
            "latency_noisy": float(trial.latency_noisy),
            "target_macs": trial.target_flops,
            "wall_time_s": trial.wall_time_s,
        }
    )
    return {k: v for k, v in metrics.items() if v is not None and not _is_nan(v)}


def _is_nan(value: Any) -> bool:
    x = _number(value)
    return x is not None and math.isnan(x)


def _log_model(
    client: MlflowClient,
    experiment_id: str,
    run_id: str,
    model_dir: Path,
    metrics: dict[str, Any],
    trust_code: bool,
) -> None:
    """The trial's saved model as an MLflow pyfunc model (:mod:`automl_prune.tracking.pyfunc`), with the
    trial's metrics. When that fails (a model the wrapper cannot run, a store without logged models),
    the plain files go to the run's ``model/`` artifact as before and the reason to its
    ``mlflow_model_error`` tag: the trial is logged all the same, only not loadable by ``mlflow.pyfunc``."""
    from automl_prune.tracking.pyfunc import log_pruned_model

    try:
        model_id = log_pruned_model(client, experiment_id, run_id, model_dir, trust_code=trust_code)
    except Exception as exc:  # whatever MLflow or the model raise: the plain files still go to the run
        log.warning("MLflow: %s logged as plain files, not as an MLflow model: %s", model_dir, exc)
        log_batch(client, run_id, tags={"mlflow_model_error": f"{type(exc).__name__}: {exc}"})
        client.log_artifacts(run_id, str(model_dir), "model")
        return
    log_batch(client, run_id, metrics=metrics, model_id=model_id)


def log_trial(
    client: MlflowClient,
    search: SearchInfo,
    experiment_id: str,
    parent_id: str,
    trial: TrialRecord,
    *,
    trust_code: bool = False,
) -> str:
    """Log ``trial`` as a nested run of ``parent_id``; a trial already logged is not logged again.

    A run of the same trial left RUNNING (a crash while logging) is deleted and logged anew.
    ``trust_code``: whether a model built from outside code may be run to log its MLflow model (true in
    the search that built it from the user's own ``--model``; else it is logged as plain files).
    """
    from mlflow.entities import RunStatus

    existing = find_trial_run(client, experiment_id, parent_id, trial.number)
    if existing is not None:
        if existing.info.status in ("FINISHED", "FAILED", "KILLED"):
            return existing.info.run_id
        client.delete_run(existing.info.run_id)
    failed = trial.state != "complete"
    tags = {
        PARENT_TAG: parent_id,
        "trial_number": str(trial.number),
        "state": trial.state,
        "feasible": str(bool(trial.feasible)).lower(),
        "automl_prune.search": search.name,
        "automl_prune.role": "trial",
    }
    run = client.create_run(experiment_id, run_name=f"trial-{trial.number}", tags=tags)
    run_id = run.info.run_id
    status = RunStatus.to_string(RunStatus.FAILED if failed else RunStatus.FINISHED)
    try:
        metrics = trial_metrics(search, trial)
        log_batch(
            client,
            run_id,
            params=flatten(trial.params or {}),
            metrics=metrics,
            tags={"error": trial.error} if trial.error else None,
        )
        if trial.model_dir and Path(trial.model_dir).is_dir():
            _log_model(client, experiment_id, run_id, Path(trial.model_dir), metrics, trust_code)
        for fig in trial.figures or []:
            if Path(fig).is_file():
                client.log_artifact(run_id, str(fig), "figures")
        client.log_dict(run_id, trial.to_stored(search.run_dir), "trial.json")
    except BaseException:
        with contextlib.suppress(Exception), _quiet_run_links():
            client.set_terminated(run_id, "FAILED")
        raise
    with _quiet_run_links():
        client.set_terminated(run_id, status)
    return run_id
