"""Model-registry promotion: register the best Pareto point under the budget, move ``champion`` if it wins.

Rules (also in the README):

- The candidate is the Pareto-front member with the highest (finite: a NaN is never registered) quality
  among those within the FLOPs budget (``flops <= search.max_flops``; any when the search had no budget)
  that saved a model; ties go to fewer FLOPs, then the earlier trial. No candidate: nothing is
  registered and the reason says why.
- It is registered as a new version of ``search.registered_model`` (default
  ``<strategy>-<model>-<data>``, sanitised to letters, digits, ``_ . -``) made from the MLflow model
  its nested run logged (:mod:`automl_prune.tracking.pyfunc`), so
  ``mlflow.pyfunc.load_model("models:/<name>@champion")`` loads it. A run that logged only the plain
  files (its MLflow model failed, or an older automl_prune logged it) is registered from its ``model/``
  artifact, and the reason says pyfunc cannot load it. The version is tagged with quality,
  quality_metric, flops, n_params, search and trial number. Registering the same trial run again
  reuses its version instead of adding one.
- The alias ``champion`` moves to it only if there is no champion yet, or it has strictly higher quality
  at no more FLOPs than the champion, both read from the champion version's tags (a champion measured
  with another quality metric, or without those tags, is kept: it cannot be compared).
- The decision and its reason go to the parent run's ``promotion.*`` tags, to
  ``<run_dir>/promotion.json`` (atomic write) and to the version's ``promotion_reason`` tag.
"""

from __future__ import annotations

import json
import logging
import math
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from automl_prune.errors import AutomlPruneError
from automl_prune.io import atomic_write_json
from automl_prune.search.records import SearchInfo, TrialRecord
from automl_prune.tracking import pyfunc, runs, store

if TYPE_CHECKING:
    from mlflow import MlflowClient

log = logging.getLogger(__name__)

CHAMPION_ALIAS = "champion"
PROMOTION_FILE = "promotion.json"
#: Why a version registered from a run's plain ``model/`` files (no logged MLflow model) cannot be
#: loaded with ``mlflow.pyfunc``.
PLAIN_FILES = (
    "registered as plain files (the trial's MLflow model was not logged: see its run's "
    "mlflow_model_error tag), so mlflow.pyfunc cannot load it; automl_prune.load can"
)


@dataclass
class PromotionDecision:
    """What promotion did. ``version`` is the registered version (None: nothing registered);
    ``promoted`` says whether it took the ``champion`` alias; ``champion`` is the version holding the
    alias afterwards and ``previous_champion`` the one holding it before."""

    registered_model: str
    version: str | None
    promoted: bool
    reason: str
    trial_number: int | None = None
    quality_metric: str | None = None
    quality: float | None = None
    flops: int | None = None
    run_id: str | None = None
    model_id: str | None = None
    source: str | None = None
    champion: str | None = None
    previous_champion: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def __rich__(self) -> str:  # `console.print(decision)` in the CLI prints the summary line
        return self.summary()

    def summary(self) -> str:
        if self.version is None:
            return f"{self.registered_model}: nothing registered ({self.reason})"
        verdict = f"now {CHAMPION_ALIAS}" if self.promoted else f"{CHAMPION_ALIAS} unchanged"
        return f"{self.registered_model} version {self.version} ({verdict}): {self.reason}"


def sanitize_model_name(name: str) -> str:
    """Registered-model names here use letters, digits, ``_ . -`` (MLflow forbids ``/`` and ``:``)."""
    clean = re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-.")
    return re.sub(r"-{2,}", "-", clean) or "automl-prune-model"


def registered_model_name(search: SearchInfo) -> str:
    """``search.registered_model``, or ``<strategy>-<model>-<data>`` from the search config."""
    if search.registered_model:
        return sanitize_model_name(search.registered_model)
    config = search.config or {}
    parts = [search.strategy, config.get("model"), config.get("data")]
    return sanitize_model_name("-".join(str(p) for p in parts if p))


def select_best(front: list[TrialRecord], max_flops: float | None) -> TrialRecord | None:
    """The highest-quality front member within the budget that saved a model (ties: fewer FLOPs)."""
    ok = [
        t
        for t in front
        if t.state == "complete"
        and t.quality is not None
        and math.isfinite(t.quality)
        and t.flops is not None
        and t.model_dir
        and (max_flops is None or t.flops <= max_flops)
    ]
    return min(ok, key=lambda t: (-t.quality, t.flops, t.number)) if ok else None


def _float(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def _compare(decision: PromotionDecision, champ_version: str, tags: dict[str, str]) -> tuple[bool, str]:
    """Whether the new version beats the champion (strictly higher quality, no more FLOPs), and why."""
    metric = decision.quality_metric
    c_metric, c_q, c_f = tags.get("quality_metric"), _float(tags.get("quality")), _float(tags.get("flops"))
    if c_q is None or c_f is None:
        return False, (f"champion version {champ_version} kept: it has no quality/flops tags to compare with")
    if c_metric and metric and c_metric != metric:
        return False, (
            f"champion version {champ_version} kept: it was measured by {c_metric!r}, "
            f"this search by {metric!r}"
        )
    q, f = decision.quality, decision.flops
    if q > c_q and f <= c_f:
        return True, (
            f"beats champion version {champ_version}: {metric} {q:.6g} > {c_q:.6g} "
            f"at {f:.6g} <= {c_f:.6g} FLOPs"
        )
    if q <= c_q:
        return False, (f"champion version {champ_version} kept: {metric} {q:.6g} is not above its {c_q:.6g}")
    return False, (
        f"champion version {champ_version} kept: {metric} {q:.6g} > {c_q:.6g} but "
        f"{f:.6g} FLOPs > its {c_f:.6g}"
    )


def _has_files(artifact_uri: str, tracking_uri: str) -> bool:
    """Whether the folder ``artifact_uri`` holds files. Listed through its own repository: MLflow 3's
    ``client.list_artifacts(run_id, "model")`` would also look up a logged model named ``model``
    through the process's global tracking URI, not the client's."""
    from mlflow.artifacts import list_artifacts

    return bool(list_artifacts(artifact_uri=artifact_uri, tracking_uri=tracking_uri))


def _ensure_registered_model(client: MlflowClient, name: str, search: SearchInfo) -> Any:
    from mlflow.exceptions import MlflowException

    try:
        return client.get_registered_model(name)
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise
    try:
        client.create_registered_model(
            name,
            tags={"automl_prune.strategy": search.strategy},
            description=f"Pruned models found by automl_prune ({search.strategy}).",
        )
    except MlflowException as exc:  # created meanwhile by another search
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    return client.get_registered_model(name)


def _record(
    client: MlflowClient, search: SearchInfo, parent_id: str | None, decision: PromotionDecision
) -> PromotionDecision:
    """Log the decision on the parent run and in ``<run_dir>/promotion.json``."""
    if parent_id is not None:
        runs.log_batch(
            client,
            parent_id,
            tags={
                "promotion.registered_model": decision.registered_model,
                "promotion.version": decision.version or "none",
                "promotion.promoted": str(decision.promoted).lower(),
                "promotion.reason": decision.reason,
                "promotion.trial_number": decision.trial_number,
                "promotion.champion": decision.champion or "none",
            },
        )
    record = {
        **decision.to_dict(),
        "tracking_uri": store.redact(client.tracking_uri),
        "search": search.name,
        "parent_run_id": parent_id,
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    atomic_write_json(Path(search.run_dir) / PROMOTION_FILE, record)
    log.info("promotion: %s", decision.summary())
    return decision


def promote(
    client: MlflowClient,
    search: SearchInfo,
    front: list[TrialRecord],
    trials: list[TrialRecord],
    *,
    trust_code: bool = False,
) -> PromotionDecision:
    """Register the best Pareto point under the budget and move ``champion`` if it wins (module doc).
    ``trust_code``: for a trial logged here (:func:`automl_prune.tracking.runs.log_trial`)."""
    name = registered_model_name(search)
    uri = client.tracking_uri
    experiment_id = runs.ensure_experiment(client, search, uri)
    parent_id = runs.read_parent_run_id(search.run_dir)
    if runs.existing_parent_run(client, parent_id, experiment_id) is None:
        parent_id = runs.ensure_parent_run(client, search, uri, reopen=False)

    best = select_best(front, search.max_flops)
    if best is None:
        budget = "no budget" if search.max_flops is None else f"budget {search.max_flops:.6g} FLOPs"
        within = [
            t
            for t in front
            if t.flops is not None and (search.max_flops is None or t.flops <= search.max_flops)
        ]
        why = (
            "Pareto points within the budget saved no model"
            if within
            else f"no Pareto point within the FLOPs {budget}"
            if front
            else "the Pareto front is empty"
        )
        return _record(
            client, search, parent_id, PromotionDecision(name, None, False, f"{why}; nothing registered")
        )

    decision = PromotionDecision(
        name,
        None,
        False,
        "",
        trial_number=best.number,
        quality_metric=search.quality_metric,
        quality=best.quality,
        flops=best.flops,
    )
    run = runs.find_trial_run(client, experiment_id, parent_id, best.number)
    if run is None:  # its trial_finished never reached this store: log it now
        runs.log_trial(client, search, experiment_id, parent_id, best, trust_code=trust_code)
        run = runs.find_trial_run(client, experiment_id, parent_id, best.number)
    logged = pyfunc.ready_model(client, run.info.run_id) if run is not None else None
    plain = f"{run.info.artifact_uri.rstrip('/')}/model" if run is not None else None
    if logged is None and (plain is None or not _has_files(plain, client.tracking_uri)):
        decision.reason = f"trial {best.number} has no model in its run; nothing registered"
        return _record(client, search, parent_id, decision)
    decision.run_id = run.info.run_id
    if logged is not None:  # its artifact location: MLflow's SQL registry resolves models:/ URIs globally
        decision.model_id, decision.source = logged.model_id, logged.artifact_location
    else:
        decision.source = plain

    registered = _ensure_registered_model(client, name, search)
    previous = (registered.aliases or {}).get(CHAMPION_ALIAS)
    decision.previous_champion = str(previous) if previous is not None else None

    same = client.search_model_versions(f"name = '{name}' and run_id = '{run.info.run_id}'")
    if same:
        version = max(same, key=lambda v: int(v.version))
        again = f"trial {best.number} was already registered as version {version.version}; "
    else:
        version = client.create_model_version(
            name,
            decision.source,
            run_id=run.info.run_id,
            model_id=decision.model_id,
            await_creation_for=0,
            description=f"search {search.name}, trial {best.number}",
            tags={
                "quality": repr(float(best.quality)),
                "quality_metric": search.quality_metric,
                "flops": str(int(best.flops)),
                "n_params": str(best.n_params),
                "latency_ms": str(best.latency_ms),
                "latency_iqr_ms": str(best.latency_iqr_ms),
                "speedup": str(best.speedup),
                "latency_noisy": str(best.latency_noisy),
                "max_flops": str(search.max_flops),
                "search": search.name,
                "strategy": search.strategy,
                "trial_number": str(best.number),
            },
        )
        again = ""
    decision.version = str(version.version)

    if previous is None:
        promoted, reason = True, f"no {CHAMPION_ALIAS} yet: version {decision.version} becomes it"
    elif str(previous) == decision.version:
        promoted, reason = True, f"version {decision.version} already is the {CHAMPION_ALIAS}"
    else:
        champ = client.get_model_version(name, str(previous))
        promoted, reason = _compare(decision, str(previous), champ.tags or {})
    if promoted and str(previous) != decision.version:
        client.set_registered_model_alias(name, CHAMPION_ALIAS, decision.version)
    decision.promoted = promoted
    plain = "" if decision.model_id else f"; {PLAIN_FILES}"
    decision.reason = again + reason + plain
    decision.champion = decision.version if promoted else decision.previous_champion
    client.set_model_version_tag(name, decision.version, "promotion_reason", decision.reason)
    return _record(client, search, parent_id, decision)


def _read_trials(path: Path) -> list[TrialRecord]:
    """The records of ``trials.jsonl`` at ``path``, their paths rooted at its run directory."""
    from automl_prune.search.rundir import stored_origin

    trials, origin = [], stored_origin(path.parent)
    for i, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            trials.append(TrialRecord.from_stored(json.loads(line), path.parent, origin))
        except (json.JSONDecodeError, TypeError) as exc:
            raise AutomlPruneError(
                f"{path} line {i} is not a trial record ({exc})",
                "restore the file from the search's run directory, or rerun the search to rewrite it",
            ) from None
    return trials


def promote_search(
    run_dir: str | Path, tracking_uri: str | None = None, registered_model: str | None = None
) -> PromotionDecision:
    """Promote the best Pareto point of an earlier search (``automl-prune promote RUN_DIR``).

    Reads ``<run_dir>/search.json`` and ``<run_dir>/trials.jsonl``; ``tracking_uri`` and
    ``registered_model`` override what the search used. The search's parent run is reused when the
    store has it (it is not reopened); otherwise a parent run is created and the trials are logged.
    The run directory is locked meanwhile: a search working in it refuses to start, and the other way
    round (:mod:`automl_prune.search.rundir`).
    """
    run_dir = Path(run_dir)
    if not (run_dir / "search.json").is_file():
        raise AutomlPruneError(
            f"{run_dir} holds no search (no search.json)",
            "pass the run directory of a finished search (it holds search.json and trials.jsonl)",
        )
    from automl_prune.search.rundir import locked

    with locked(run_dir, "promote"):
        return _promote_search(run_dir, tracking_uri, registered_model)


def _promote_search(
    run_dir: Path, tracking_uri: str | None, registered_model: str | None
) -> PromotionDecision:
    search_file, trials_file = run_dir / "search.json", run_dir / "trials.jsonl"
    try:
        search = SearchInfo.from_json(search_file.read_text(), run_dir=run_dir)
    except (json.JSONDecodeError, TypeError) as exc:
        raise AutomlPruneError(
            f"{search_file} is not a search record ({exc})", "rerun the search to rewrite it"
        ) from None
    if tracking_uri:
        search.tracking_uri = tracking_uri
    if registered_model:
        search.registered_model = registered_model
    from automl_prune.search.pareto import pareto_front

    trials = _read_trials(trials_file) if trials_file.is_file() else []
    front = pareto_front(trials)
    uri, client = store.open_client(search)
    with store.tracking_errors(uri, "promoting the best Pareto point"):
        experiment_id = runs.ensure_experiment(client, search, uri)
        parent_id = runs.read_parent_run_id(run_dir)
        created = runs.existing_parent_run(client, parent_id, experiment_id) is None
        if created:
            parent_id = runs.ensure_parent_run(client, search, uri, reopen=False)
        if created:
            logged = runs.trial_runs(client, experiment_id, parent_id)
            for trial in trials:
                if trial.number not in logged:
                    runs.log_trial(client, search, experiment_id, parent_id, trial)
        decision = promote(client, search, front, trials)
        if created:
            client.set_terminated(parent_id, "FINISHED")
    return decision
