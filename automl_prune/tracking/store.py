"""The MLflow tracking store: which URI, where its artifacts go, whether it can be reached, a client for it.

- tracking URI: ``search.tracking_uri`` (``--tracking-uri``) or, by default, an embedded SQLite store
  ``sqlite:///<run_dir>/mlflow.db`` whose artifacts go to ``<run_dir>/mlartifacts``. For any other local
  SQLite URI the artifacts go to ``mlartifacts/`` beside the database file; an HTTP server decides
  itself (``--artifacts-destination`` / ``--default-artifact-root``).
- MLflow keeps absolute artifact URIs in its database (experiments, runs, registered versions). When a
  local SQLite store was moved or copied with its ``mlartifacts/`` (a run directory), :func:`open_client`
  first points those URIs at the ``mlartifacts/`` beside the database again
  (:func:`reroot_artifacts`), so the copy logs, reads and registers its own artifacts and never writes
  into the original.
- before the first write of every hook the server is checked with one ``GET /health`` without retries and
  with a short timeout (:data:`CHECK_TIMEOUT_S`), so a server that is down gives one clear
  :class:`~automl_prune.errors.TrackingError` within seconds instead of MLflow's minutes of retries, and
  nothing is written anywhere before that check passes.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlparse

from automl_prune.errors import AutomlPruneError, TrackingError

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from automl_prune.search.records import SearchInfo

log = logging.getLogger(__name__)

DEFAULT_DB = "mlflow.db"
ARTIFACT_DIR = "mlartifacts"
CHECK_TIMEOUT_S = 5


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


# Columns of MLflow's SQL schema that hold artifact URIs (those missing from a schema version are skipped).
_ARTIFACT_COLUMNS = (
    ("experiments", "artifact_location"),
    ("runs", "artifact_uri"),
    ("model_versions", "source"),
    ("model_versions", "storage_location"),
    ("logged_models", "artifact_location"),
)


def reroot_artifacts(uri: str) -> int:
    """Point the artifact URIs of a moved local SQLite store at the ``mlartifacts/`` beside it again.

    An experiment whose artifact location is another folder's ``mlartifacts`` (``file:`` URI) was made
    where the database lay before it was moved or copied; that prefix is replaced by this database's
    :func:`artifact_location` in every column of :data:`_ARTIFACT_COLUMNS`, in one transaction. Returns
    the number of experiments re-rooted (0 when nothing moved, or the URI is not a local SQLite file).
    """
    import sqlite3

    db = _sqlite_path(uri)
    here = artifact_location(uri)
    if db is None or here is None or not db.is_file():
        return 0
    con = sqlite3.connect(str(db), timeout=60)
    try:
        tables = {name for (name,) in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if "experiments" not in tables:
            return 0
        moved = {
            loc.rstrip("/")
            for (loc,) in con.execute("SELECT artifact_location FROM experiments")
            if loc
            and loc.startswith("file:")
            and loc.rstrip("/").endswith("/" + ARTIFACT_DIR)
            and loc.rstrip("/") != here
        }
        if not moved:
            return 0
        columns = [
            (table, column)
            for table, column in _ARTIFACT_COLUMNS
            if table in tables and column in {row[1] for row in con.execute(f"PRAGMA table_info({table})")}
        ]
        with con:
            for old in moved:
                for table, column in columns:
                    con.execute(
                        f"UPDATE {table} SET {column} = ? || substr({column}, ?) "
                        f"WHERE {column} = ? OR substr({column}, 1, ?) = ?",
                        (here, len(old) + 1, old, len(old) + 1, old + "/"),
                    )
    finally:
        con.close()
    log.info("MLflow store %s was moved: artifacts re-rooted from %s to %s", db, sorted(moved), here)
    return len(moved)


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


def check_reachable(uri: str, timeout: float = CHECK_TIMEOUT_S, *, create: bool = True) -> None:
    """Raise :class:`TrackingError` unless the tracking store at ``uri`` can be used.

    HTTP(S): one ``GET <uri>/health`` with ``max_retries=0`` and ``timeout`` seconds, through MLflow's own
    request code so its TLS and auth settings apply; any answer but a gateway error counts as up.
    The retry count and timeout are passed explicitly, so the check neither depends on nor changes the
    process's ``MLFLOW_HTTP_REQUEST_MAX_RETRIES`` / ``MLFLOW_HTTP_REQUEST_TIMEOUT``.
    Local SQLite: the database's folder is created (``create``; else only checked to be creatable, so
    a check before any work leaves nothing behind) and must be writable.
    """
    scheme = urlparse(uri).scheme
    if scheme in ("http", "https"):
        from mlflow.utils.credentials import get_default_host_creds
        from mlflow.utils.rest_utils import http_request

        try:
            resp = http_request(
                get_default_host_creds(uri),
                "/health",
                "GET",
                max_retries=0,
                backoff_factor=0,
                backoff_jitter=0,
                timeout=timeout,
                raise_on_status=False,
                retry_codes=(),
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
    if db is not None and not create:
        folder = next((p for p in (db.parent, *db.parent.parents) if p.exists()), Path("."))
        if not folder.is_dir() or not os.access(folder, os.W_OK | os.X_OK):
            raise TrackingError(f"the MLflow store {redact(uri)} cannot be created in {folder}", _fix(uri))
        if db.exists() and not os.access(db, os.W_OK):
            raise TrackingError(f"the MLflow store {redact(uri)} is not writable", _fix(uri))
    elif db is not None:
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


@contextlib.contextmanager
def mlflow_setting(key: str, value: str) -> Iterator[None]:
    """``os.environ[key] = value`` inside the block only: some MLflow settings are read from nowhere else."""
    old = os.environ.get(key)
    os.environ[key] = value
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = old


def get_client(uri: str) -> MlflowClient:
    """A client whose tracking and registry both use ``uri`` (the registry lives in the same store)."""
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def open_client(search: SearchInfo) -> tuple[str, MlflowClient]:
    """Resolve the URI of ``search``, check it is reachable, and return it with a client."""
    uri = resolve_tracking_uri(search)
    check_reachable(uri)
    with tracking_errors(uri, "opening the tracking store"):
        reroot_artifacts(uri)
        _forget_artifact_repos()
        return uri, get_client(uri)


def _forget_artifact_repos() -> None:
    """Empty MLflow's process-wide cache of artifact repositories, which is keyed by run id alone: a
    copied store holds the same run ids as its original, with artifacts elsewhere."""
    with contextlib.suppress(ImportError, AttributeError):
        from mlflow.tracking._tracking_service import utils

        utils._artifact_repos_cache.clear()


_CREDENTIALS = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)(?P<user>[^:/@\s]+):[^@/\s]+@", re.I)


def redact(text: str) -> str:
    """Hide passwords in URIs (``http://user:secret@host`` -> ``http://user:***@host``)."""
    return _CREDENTIALS.sub(r"\g<scheme>\g<user>:***@", text)
