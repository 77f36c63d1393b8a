"""MLflow tracking, a plugin on the lifecycle hooks (registered through the ``mlflow`` entry point).

What goes where:

- tracking URI: ``search.tracking_uri`` (``--tracking-uri``) or, by default, an embedded SQLite store
  ``sqlite:///<run_dir>/mlflow.db`` whose artifacts go to ``<run_dir>/mlartifacts``. For any other local
  SQLite URI the artifacts go to ``mlartifacts/`` beside the database file; an HTTP server decides
  itself (``--artifacts-destination`` / ``--default-artifact-root``).
- experiment ``automl-prune/<search name>``; one parent run per search, reopened when the search is
  resumed (its id is kept in ``<run_dir>/mlflow_parent_run_id``); one nested run per trial, tagged
  ``trial_number``, with the pruned model under ``model/`` and the trial's figures under ``figures/``.
- ``search_finished`` logs ``pareto.csv`` / ``pareto.png`` on the parent, ends it and promotes the best
  Pareto point under the budget (:mod:`automl_prune.tracking.registry`).

The hooks hold no MLflow state between calls: every call builds an :class:`mlflow.MlflowClient` for the
URI and addresses runs by explicit id (the parent's from the run directory, a trial's by its
``trial_number`` tag), never through MLflow's active-run stack. So trial results may arrive in any
process (a Ray driver, a resumed search) and a trial reported twice is logged once.

Before the first write of every hook the server is checked with one ``GET /health`` without retries and
with a short timeout (:data:`CHECK_TIMEOUT_S`), so a server that is down gives one clear
:class:`~automl_prune.errors.TrackingError` within seconds instead of MLflow's minutes of retries, and
nothing is written anywhere before that check passes.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import logging
import math
import os
import platform
import re
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlparse

from automl_prune.errors import AutomlPruneError, TrackingError
from automl_prune.hookspecs import hookimpl
from automl_prune.io import atomic_write_text

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities import Run

    from automl_prune.search.records import SearchInfo, TrialRecord

log = logging.getLogger(__name__)

PARENT_RUN_ID_FILE = "mlflow_parent_run_id"
EXPERIMENT_PREFIX = "automl-prune/"
DEFAULT_DB = "mlflow.db"
ARTIFACT_DIR = "mlartifacts"
CHECK_TIMEOUT_S = 5
PARENT_TAG = "mlflow.parentRunId"

# MLflow's limits (mlflow.utils.validation): longer values are truncated, batches are chunked.
_MAX_PARAM_VAL = 6000
_MAX_TAG_VAL = 8000
_MAX_KEY = 250
_BATCH_PARAMS_TAGS = 100
_BATCH_METRICS = 1000
_VERSIONED = ("automl-prune", "torch", "torchvision", "torch-pruning", "fvcore", "optuna", "ray", "mlflow")


# ---------------------------------------------------------------------------------------------- URIs


def default_tracking_uri(run_dir: str | Path) -> str:
    """The embedded store of a search: ``sqlite:///<run_dir>/mlflow.db`` (absolute path)."""
    return f"sqlite:///{(Path(run_dir) / DEFAULT_DB).resolve()}"


def resolve_tracking_uri(search: SearchInfo) -> str:
    return search.tracking_uri or default_tracking_uri(search.run_dir)


def _sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI, or None (in-memory or not SQLite)."""
    if not uri.startswith("sqlite:///"):
        return None
    path = unquote(uri[len("sqlite:///") :].split("?", 1)[0])
    return Path(path) if path and path != ":memory:" else None


def artifact_location(uri: str) -> str | None:
    """Where a new experiment keeps its artifacts: ``mlartifacts/`` beside a local SQLite database.

    For the default store that is ``<run_dir>/mlartifacts``. None lets the server (or MLflow's default)
    choose, which is right for ``http(s)://`` servers that proxy artifacts.
    """
    db = _sqlite_path(uri)
    if db is None:
        return None
    return (db.resolve().parent / ARTIFACT_DIR).as_uri()


# --------------------------------------------------------------------------------------- reachability


def _fix(uri: str) -> str:
    parsed = urlparse(uri)
    if parsed.scheme in ("http", "https"):
        port = parsed.port or (443 if parsed.scheme == "https" else 80)
        return (
            f"start the server (e.g. `mlflow server --host {parsed.hostname} --port {port}`) or drop "
            "--tracking-uri to track into the run directory's own SQLite store (<run_dir>/mlflow.db)"
        )
    return "pass a reachable --tracking-uri, or drop it to use <run_dir>/mlflow.db"


def _short(exc: BaseException, timeout: float) -> str:
    text = str(exc)
    if "refused" in text.lower():
        return "connection refused"
    if "timed out" in text.lower() or "timeout" in type(exc).__name__.lower():
        return f"no answer within {timeout:g} s"
    if "Name or service not known" in text or "nodename nor servname" in text:
        return "unknown host"
    first = text.strip().splitlines()[0] if text.strip() else type(exc).__name__
    return first[:300]


def check_reachable(uri: str, timeout: float = CHECK_TIMEOUT_S) -> None:
    """Raise :class:`TrackingError` unless the tracking store at ``uri`` can be used.

    HTTP(S): one ``GET <uri>/health`` with ``max_retries=0`` and ``timeout`` seconds, through MLflow's own
    request code so its TLS and auth settings apply; any answer but a gateway error counts as up.
    The retry count and timeout are passed explicitly, so the check neither depends on nor changes the
    process's ``MLFLOW_HTTP_REQUEST_MAX_RETRIES`` / ``MLFLOW_HTTP_REQUEST_TIMEOUT``.
    Local SQLite: the database's folder is created and must be writable.
    """
    scheme = urlparse(uri).scheme
    if scheme in ("http", "https"):
        from mlflow.utils.credentials import get_default_host_creds
        from mlflow.utils.rest_utils import http_request

        try:
            resp = http_request(
                get_default_host_creds(uri), "/health", "GET",
                max_retries=0, backoff_factor=0, backoff_jitter=0, timeout=timeout,
                raise_on_status=False, retry_codes=(),
            )
        except Exception as exc:  # every failure here means "not reachable"
            raise TrackingError(
                f"MLflow tracking server {redact(uri)} is not reachable ({_short(exc, timeout)})", _fix(uri)
            ) from None
        if resp.status_code in (502, 503, 504):
            raise TrackingError(
                f"MLflow tracking server {redact(uri)} is not available "
                f"(HTTP {resp.status_code} from /health)",
                _fix(uri),
            )
        return
    db = _sqlite_path(uri)
    if db is not None:
        try:
            db.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise TrackingError(f"cannot create the MLflow store {redact(uri)}: {exc}", _fix(uri)) from None
        if not os.access(db.parent, os.W_OK) or (db.exists() and not os.access(db, os.W_OK)):
            raise TrackingError(f"the MLflow store {redact(uri)} is not writable", _fix(uri))


@contextlib.contextmanager
def tracking_errors(uri: str, action: str) -> Iterator[None]:
    """Turn whatever MLflow, requests or SQLAlchemy raise into one :class:`TrackingError`."""
    try:
        yield
    except AutomlPruneError:
        raise
    except Exception as exc:  # a user-facing error; the cause stays in __cause__
        msg = str(exc).strip().splitlines()[0][:400] if str(exc).strip() else type(exc).__name__
        problem = f"MLflow tracking at {redact(uri)} failed while {action}: {redact(msg)}"
        raise TrackingError(problem, _fix(uri)) from exc


def get_client(uri: str) -> MlflowClient:
    """A client whose tracking and registry both use ``uri`` (the registry lives in the same store)."""
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def open_client(search: SearchInfo) -> tuple[str, MlflowClient]:
    """Resolve the URI of ``search``, check it is reachable, and return it with a client."""
    uri = resolve_tracking_uri(search)
    check_reachable(uri)
    with tracking_errors(uri, "opening the tracking store"):
        return uri, get_client(uri)


@contextlib.contextmanager
def _quiet_run_links() -> Iterator[None]:
    """MLflow prints two 'View run' lines per ended run on HTTP stores; keep them for the parent only."""
    key = "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"
    old = os.environ.get(key)
    os.environ[key] = "true"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = old


# ------------------------------------------------------------------------------------- small helpers


def _key(name: str) -> str:
    """An MLflow-safe key: alphanumerics, ``_ - . / space``; other characters become ``_``."""
    return re.sub(r"[^\w\-. /]", "_", str(name))[:_MAX_KEY] or "_"


_CREDENTIALS = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)(?P<user>[^:/@\s]+):[^@/\s]+@", re.I)


def redact(text: str) -> str:
    """Hide passwords in URIs (``http://user:secret@host`` -> ``http://user:***@host``)."""
    return _CREDENTIALS.sub(r"\g<scheme>\g<user>:***@", text)


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
) -> None:
    """Log in MLflow-sized batches; None and non-numeric metric values are skipped."""
    from mlflow.entities import Metric, Param, RunTag

    now = int(time.time() * 1000)
    p = [Param(_key(k), _str(v, _MAX_PARAM_VAL)) for k, v in (params or {}).items()]
    t = [RunTag(_key(k), _str(v, _MAX_TAG_VAL)) for k, v in (tags or {}).items() if v is not None]
    m = []
    for k, v in (metrics or {}).items():
        x = _number(v)
        if x is not None:
            m.append(Metric(_key(k), x, now, 0))
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


# ------------------------------------------------------------------------------- experiment and runs


def experiment_name(search: SearchInfo) -> str:
    return f"{EXPERIMENT_PREFIX}{search.name}"


def ensure_experiment(client: MlflowClient, search: SearchInfo, uri: str) -> str:
    """The id of ``automl-prune/<search name>``, created (or restored from the trash) when needed."""
    from mlflow.exceptions import MlflowException

    name = experiment_name(search)
    exp = client.get_experiment_by_name(name)
    if exp is None:
        try:
            return client.create_experiment(name, artifact_location=artifact_location(uri))
        except MlflowException:  # created meanwhile by another process
            exp = client.get_experiment_by_name(name)
            if exp is None:
                raise
    if exp.lifecycle_stage == "deleted":
        client.restore_experiment(exp.experiment_id)
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


def base_metrics(search: SearchInfo) -> dict[str, Any]:
    metrics = {f"base_{k}": v for k, v in (search.base or {}).items()}
    if "quality" in (search.base or {}):
        metrics[f"base_{search.quality_metric}"] = search.base["quality"]
    return metrics


def _log_missing_base(client: MlflowClient, run: Run, search: SearchInfo) -> None:
    """The base model is measured after ``search_started``: log its metrics once they are known."""
    missing = {k: v for k, v in base_metrics(search).items() if _key(k) not in run.data.metrics}
    if missing:
        log_batch(client, run.info.run_id, metrics=missing)


def parent_run(client: MlflowClient, search: SearchInfo, uri: str, experiment_id: str) -> str:
    """The id of the search's parent run for a hook other than ``search_started`` (made if missing)."""
    run = existing_parent_run(client, read_parent_run_id(search.run_dir), experiment_id)
    if run is None:
        return ensure_parent_run(client, search, uri)
    _log_missing_base(client, run, search)
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
        if reopen:
            tags["resume.count"] = int(run.data.tags.get("resume.count", "0")) + 1
            client.update_run(run_id, status="RUNNING")
        log_batch(client, run_id, params={k: v for k, v in params.items() if k not in old}, tags=tags)
        _log_missing_base(client, run, search)
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
            [experiment_id], filter_string=f"tags.`{PARENT_TAG}` = '{parent_id}'",
            run_view_type=ViewType.ACTIVE_ONLY, max_results=1000, page_token=token,
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
        run_view_type=ViewType.ACTIVE_ONLY, order_by=["attributes.start_time DESC"], max_results=1,
    )
    return runs[0] if runs else None


def trial_metrics(search: SearchInfo, trial: TrialRecord) -> dict[str, Any]:
    metrics: dict[str, Any] = dict(trial.metrics or {})
    metrics.update(
        {
            "quality": trial.quality,
            search.quality_metric: trial.quality,
            "flops": trial.flops,
            "n_params": trial.n_params,
            "latency_ms": trial.latency_ms,
            "target_flops": trial.target_flops,
            "wall_time_s": trial.wall_time_s,
        }
    )
    return {k: v for k, v in metrics.items() if v is not None and not _is_nan(v)}


def _is_nan(value: Any) -> bool:
    x = _number(value)
    return x is not None and math.isnan(x)


def log_trial(client: MlflowClient, search: SearchInfo, experiment_id: str, parent_id: str,
              trial: TrialRecord) -> str:
    """Log ``trial`` as a nested run of ``parent_id``; a trial already logged is not logged again.

    A run of the same trial left RUNNING (a crash while logging) is deleted and logged anew.
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
        log_batch(
            client, run_id, params=flatten(trial.params or {}), metrics=trial_metrics(search, trial),
            tags={"error": trial.error} if trial.error else None,
        )
        if trial.model_dir and Path(trial.model_dir).is_dir():
            client.log_artifacts(run_id, str(trial.model_dir), "model")
        for fig in trial.figures or []:
            if Path(fig).is_file():
                client.log_artifact(run_id, str(fig), "figures")
        client.log_dict(run_id, trial.to_dict(), "trial.json")
    except BaseException:
        with contextlib.suppress(Exception), _quiet_run_links():
            client.set_terminated(run_id, "FAILED")
        raise
    with _quiet_run_links():
        client.set_terminated(run_id, status)
    return run_id


# ------------------------------------------------------------------------------------------- hooks


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
        log_trial(client, search, experiment_id, parent_id, trial)


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
        for trial in trials:  # trials whose trial_finished never reached this store
            if trial.number not in logged:
                log_trial(client, search, experiment_id, parent_id, trial)
        run_dir = Path(search.run_dir)
        for name in ("pareto.csv", "pareto.png"):
            if (run_dir / name).is_file():
                client.log_artifact(parent_id, str(run_dir / name))
        n_failed = sum(t.state != "complete" for t in trials)
        log_batch(
            client, parent_id,
            metrics={"n_trials": len(trials), "n_failed": n_failed, "pareto_size": len(front)},
            tags={"pareto_trials": ",".join(str(t.number) for t in front)},
        )
        client.set_terminated(parent_id, "FINISHED")
    with tracking_errors(uri, "promoting the best Pareto point"):
        decision = promote(client, search, front, trials)
    log.info("MLflow promotion: %s", decision.summary())
    return f"MLflow ({redact(uri)}): {decision.summary()}"
