"""MLflow tracking plugin and registry promotion, against real embedded SQLite stores.

The hooks are driven as the orchestrator drives them, with real trial records whose ``model_dir`` holds a
saved tiny pruned model (spec.json + model.safetensors, as ``save_pruned`` writes it).
"""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch
from mlflow import MlflowClient
from mlflow.entities import ViewType
from safetensors.torch import load_file, save_file

import automl_prune
from automl_prune.data.base import DataInfo
from automl_prune.errors import TrackingError, UntrustedCodeError
from automl_prune.models.base import ModelRef
from automl_prune.models.registry import build_model
from automl_prune.plugins import load_plugins
from automl_prune.pruning import save_pruned
from automl_prune.search.records import SearchInfo, TrialRecord
from automl_prune.tracking import plugin
from automl_prune.tracking.registry import (
    CHAMPION_ALIAS,
    promote_search,
    registered_model_name,
    select_best,
)
from automl_prune.tracking.runs import PARENT_TAG, read_parent_run_id
from automl_prune.tracking.store import check_reachable, default_tracking_uri

pytestmark = pytest.mark.timeout(300)


# ------------------------------------------------------------------------------------------ helpers


DIGITS8 = DataInfo("digits", "classification", 1, (8, 8), 10)


def save_tiny_model(path: Path, width: int = 4) -> Path:
    """A real (tiny) saved model, as a trial writes it: a ResNet-20 of ``width`` for 8x8 digits."""
    ref = ModelRef("resnet20", {"width": width})
    model = build_model(ref, DIGITS8)
    return save_pruned(model, path, model_ref=ref, info=DIGITS8, metadata={"width": width})


def save_foreign_model(path: Path, width: int = 4) -> dict[str, torch.Tensor]:
    """A model directory automl_prune did not write (its spec is not a pruned-model spec)."""
    model = torch.nn.Sequential(
        torch.nn.Conv2d(1, width, 3, padding=1),
        torch.nn.BatchNorm2d(width),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(width, 10),
    )
    path.mkdir(parents=True, exist_ok=True)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(path / "model.safetensors"))
    (path / "spec.json").write_text(json.dumps({"arch": "tiny-cnn", "widths": [width], "classes": 10}))
    return state


def save_figure(path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(1, 1))
    ax.plot([0, 1], [0, 1])
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def make_search(run_dir: Path, name: str = "s1", **kw: object) -> SearchInfo:
    run_dir.mkdir(parents=True, exist_ok=True)
    args: dict = dict(
        name=name,
        strategy="magnitude",
        run_dir=run_dir,
        quality_metric="accuracy",
        base={"quality": 0.9, "flops": 2000.0, "n_params": 500.0, "latency_ms": 1.5},
        max_flops=1500.0,
        config={
            "model": "resnet20",
            "data": "digits",
            "seed": 7,
            "device": "cpu",
            "trials": 3,
            "model_args": {"width": 8},
            "overrides": ["lr=0.1"],
        },
        conventions={"flops": "fvcore MACs, batch 1, 1x8x8", "latency": "median of 20, batch 1, cpu"},
    )
    args.update(kw)
    return SearchInfo(**args)


def make_trial(
    run_dir: Path, number: int, quality: float, flops: int, *, failed: bool = False, figure: bool = False
) -> TrialRecord:
    if failed:
        return TrialRecord(
            number=number, state="failed", params={"ratio": 0.9}, error="ValueError: boom", wall_time_s=0.5
        )
    model_dir = run_dir / "trials" / f"{number:04d}" / "model"
    save_tiny_model(model_dir, width=2 + number)
    figures = [str(save_figure(run_dir / "trials" / f"{number:04d}" / "saliency.png"))] if figure else []
    return TrialRecord(
        number=number,
        state="complete",
        params={"ratio": 0.5 + number / 10, "method": "l1"},
        quality=quality,
        flops=flops,
        n_params=100 + number,
        latency_ms=0.3,
        target_flops=flops * 1.1,
        feasible=True,
        metrics={"test_accuracy": quality - 0.01},
        model_dir=str(model_dir),
        figures=figures,
        wall_time_s=2.0,
    )


def write_front_files(run_dir: Path) -> None:
    (run_dir / "pareto.csv").write_text("trial,quality,flops\n0,0.8,1000\n")
    save_figure(run_dir / "pareto.png")


def run_search(
    search: SearchInfo, trials: list[TrialRecord], front: list[TrialRecord] | None = None, hook=None
) -> None:
    """Drive the lifecycle hooks as the orchestrator does."""
    hook = hook or plugin
    front = [t for t in trials if t.state == "complete"] if front is None else front
    hook.search_started(search=search)
    for t in trials:
        hook.trial_finished(search=search, trial=t)
    write_front_files(Path(search.run_dir))
    hook.search_finished(search=search, trials=trials, front=front)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def client_for(uri: str) -> MlflowClient:
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def children(client: MlflowClient, parent_id: str) -> dict[int, object]:
    exp = client.get_run(parent_id).info.experiment_id
    runs = client.search_runs([exp], f"tags.`mlflow.parentRunId` = '{parent_id}'", ViewType.ALL)
    return {int(r.data.tags["trial_number"]): r for r in runs}


def artifact_paths(client: MlflowClient, run_id: str, path: str | None = None) -> set[str]:
    out = set()
    for f in client.list_artifacts(run_id, path):
        out |= artifact_paths(client, run_id, f.path) if f.is_dir else {f.path}
    return out


# ---------------------------------------------------------------------------------------------- tests


def test_entry_point_registers_the_tracker() -> None:
    plugins = load_plugins()
    assert plugins.pm.get_plugin("mlflow") is plugin
    assert "mlflow" not in {f.name for f in plugins.failures}


def test_runs_metrics_artifacts_and_first_champion(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    search = make_search(run_dir)
    trials = [
        make_trial(run_dir, 0, 0.80, 1000, figure=True),
        make_trial(run_dir, 1, 0.85, 1400),
        make_trial(run_dir, 2, 0.0, 0, failed=True),
        make_trial(run_dir, 3, 0.95, 1800),
    ]
    front = [trials[0], trials[1], trials[3]]  # trial 3 is over the 1500-FLOPs budget
    hooks = load_plugins().hook  # through the entry point, as the orchestrator calls it
    run_search(search, trials, front, hook=hooks)

    uri = f"sqlite:///{(run_dir / 'mlflow.db').resolve()}"
    client = client_for(uri)
    exp = client.get_experiment_by_name("automl-prune/s1")
    assert exp.artifact_location == (run_dir / "mlartifacts").resolve().as_uri()
    parent_id = (run_dir / "mlflow_parent_run_id").read_text().strip()
    parent = client.get_run(parent_id)
    assert parent.info.status == "FINISHED"
    p, tags, m = parent.data.params, parent.data.tags, parent.data.metrics
    assert (p["strategy"], p["model"], p["data"], p["budget_max_flops"]) == (
        "magnitude",
        "resnet20",
        "digits",
        "1500.0",
    )
    assert p["model_args.width"] == "8" and p["overrides"] == '["lr=0.1"]' and p["trials"] == "3"
    assert tags["convention.flops"].startswith("fvcore") and tags["seed"] == "7" and tags["device"] == "cpu"
    assert tags["version.torch"] == torch.__version__ and tags["version.mlflow"] == mlflow.__version__
    exp = client.get_experiment(client.get_run(parent_id).info.experiment_id)
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"  # the classic ML view
    assert m["base_val_accuracy"] == 0.9 and m["base_macs"] == 2000  # one metric per fact
    assert not {"base_quality", "base_accuracy", "base_flops"} & set(m)
    assert m["n_trials"] == 4 and m["n_failed"] == 1 and m["pareto_size"] == 3
    assert {"pareto.csv", "pareto.png"} <= artifact_paths(client, parent_id)

    kids = children(client, parent_id)
    assert sorted(kids) == [0, 1, 2, 3]
    ok, bad = kids[0], kids[2]
    assert ok.info.status == "FINISHED" and ok.data.tags["state"] == "complete"
    assert ok.data.params == {"ratio": "0.5", "method": "l1"}
    om = ok.data.metrics
    assert om["val_accuracy"] == 0.8 and not {"quality", "accuracy", "flops"} & set(om)  # one per fact
    assert om["macs"] == 1000 and om["flops_ratio"] == 0.5 and om["n_params"] == 100
    assert om["latency_ms"] == 0.3 and om["wall_time_s"] == 2.0 and om["test_accuracy"] == pytest.approx(0.79)
    assert om["target_macs"] == pytest.approx(1100)
    # the model is the run's MLflow model (a pyfunc), not a plain artifact folder of the run
    assert artifact_paths(client, ok.info.run_id) == {"figures/saliency.png", "trial.json"}
    [output] = ok.outputs.model_outputs
    logged = client.get_logged_model(output.model_id)
    assert (logged.name, logged.source_run_id, str(logged.status)) == ("model", ok.info.run_id, "READY")
    assert logged.metrics and {m.key for m in logged.metrics} >= {"val_accuracy", "macs", "flops_ratio"}
    assert not bad.outputs.model_outputs
    assert bad.info.status == "FAILED" and bad.data.tags["error"] == "ValueError: boom"
    assert bad.data.tags["state"] == "failed" and "model" not in str(artifact_paths(client, bad.info.run_id))

    # promotion: best under the budget is trial 1 (0.85 at 1400), not trial 3 (0.95 at 1800 > 1500)
    name = "magnitude-resnet20-digits"
    mv = client.get_model_version_by_alias(name, CHAMPION_ALIAS)
    assert str(mv.version) == "1" and mv.run_id == kids[1].info.run_id
    assert mv.tags["trial_number"] == "1" and float(mv.tags["quality"]) == 0.85 and mv.tags["flops"] == "1400"
    assert mv.tags["search"] == "s1" and mv.tags["quality_metric"] == "accuracy"
    decision = json.loads((run_dir / "promotion.json").read_text())
    assert decision["promoted"] is True and decision["version"] == "1" and "no champion" in decision["reason"]
    tags = client.get_run(parent_id).data.tags
    assert tags["promotion.promoted"] == "true" and tags["promotion.version"] == "1"
    assert "no champion" in tags["promotion.reason"]

    champion_model = client.get_logged_model(decision["model_id"])  # the trial's logged model
    assert (
        champion_model.source_run_id == kids[1].info.run_id and mv.source == champion_model.artifact_location
    )

    # the champion loads with mlflow.pyfunc, and automl_prune.load reads the same download
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    try:
        champion = mlflow.pyfunc.load_model(f"models:/{name}@{CHAMPION_ALIAS}")
        got = Path(
            mlflow.artifacts.download_artifacts(
                f"runs:/{kids[1].info.run_id}/model", dst_path=str(tmp_path / "dl")
            )
        )
    finally:
        mlflow.set_tracking_uri(None)
        mlflow.set_registry_uri(None)
    x = torch.randn(3, 1, 8, 8)
    with torch.no_grad():
        want = automl_prune.load(trials[1].model_dir)(x).numpy()
        assert np.array_equal(automl_prune.load(got)(x).numpy(), want)
    assert np.array_equal(champion.predict(x.numpy()), want)
    assert json.loads((got / "spec.json").read_text())["metadata"] == {"width": 3}


def test_a_model_mlflow_cannot_wrap_is_logged_as_plain_files(tmp_path: Path) -> None:
    """The trial is logged all the same: its files under the run's model/, the reason as a tag, and
    the registered version says pyfunc cannot load it."""
    run_dir = tmp_path / "run"
    search = make_search(run_dir)
    trial = make_trial(run_dir, 0, 0.8, 1000)
    state = save_foreign_model(Path(trial.model_dir))
    run_search(search, [trial])

    client = client_for(default_tracking_uri(run_dir))
    [run] = children(client, read_parent_run_id(run_dir)).values()
    assert run.info.status == "FINISHED" and run.data.metrics["val_accuracy"] == 0.8
    assert "is corrupt" in run.data.tags["mlflow_model_error"]
    plain = {"model/spec.json", "model/model.safetensors", "trial.json"}
    assert artifact_paths(client, run.info.run_id) == plain
    exp = client.get_run(run.info.run_id).info.experiment_id
    assert not client.search_logged_models([exp])  # the half-logged MLflow model was removed
    decision = json.loads((run_dir / "promotion.json").read_text())
    assert decision["version"] == "1" and decision["model_id"] is None
    assert "mlflow.pyfunc cannot load it" in decision["reason"]
    got = Path(mlflow.artifacts.download_artifacts(artifact_uri=decision["source"], dst_path=str(tmp_path)))
    assert torch.equal(load_file(str(got / "model.safetensors"))["1.weight"], state["1.weight"])


def test_champion_moves_only_for_better_quality_at_no_more_flops(tmp_path: Path) -> None:
    shared = tmp_path / "store"
    uri = f"sqlite:///{shared / 'mlflow.db'}"
    name = "digits-champion"

    def search(tag: str, quality: float, flops: int) -> dict:
        run_dir = tmp_path / tag
        info = make_search(run_dir, name=tag, tracking_uri=uri, registered_model=name, max_flops=2000.0)
        run_search(info, [make_trial(run_dir, 0, quality, flops)])
        return json.loads((run_dir / "promotion.json").read_text())

    first = search("a", 0.80, 1000)
    assert (first["version"], first["promoted"]) == ("1", True)
    client = client_for(uri)
    location = client.get_experiment_by_name("automl-prune/a").artifact_location
    assert location == (shared / "mlartifacts").as_uri()

    worse = search("b", 0.75, 800)
    assert (worse["version"], worse["promoted"], worse["champion"]) == ("2", False, "1")
    assert "0.75 is not above" in worse["reason"] and "champion version 1 kept" in worse["reason"]

    heavier = search("c", 0.90, 1200)
    assert (heavier["version"], heavier["promoted"]) == ("3", False)
    assert "FLOPs > its 1000" in heavier["reason"]
    assert str(client.get_model_version_by_alias(name, CHAMPION_ALIAS).version) == "1"
    assert "kept" in client.get_model_version(name, "3").tags["promotion_reason"]

    better = search("d", 0.85, 1000)
    assert (better["version"], better["promoted"], better["previous_champion"]) == ("4", True, "1")
    assert "beats champion version 1" in better["reason"]
    assert str(client.get_model_version_by_alias(name, CHAMPION_ALIAS).version) == "4"
    d_parent = (tmp_path / "d" / "mlflow_parent_run_id").read_text().strip()
    assert "beats" in client.get_run(d_parent).data.tags["promotion.reason"]


def test_nothing_registered_when_no_point_is_within_budget(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    search = make_search(run_dir, max_flops=500.0)
    run_search(search, [make_trial(run_dir, 0, 0.8, 1000)])
    decision = json.loads((run_dir / "promotion.json").read_text())
    assert decision["version"] is None and decision["promoted"] is False
    assert "no Pareto point within the FLOPs budget" in decision["reason"]
    client = client_for(default_tracking_uri(run_dir))
    assert client.search_registered_models() == []
    parent_id = read_parent_run_id(run_dir)
    assert client.get_run(parent_id).data.tags["promotion.version"] == "none"


def test_resume_reopens_the_same_parent_and_logs_each_trial_once(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    search = make_search(run_dir, base={"quality": 0.9, "flops": 2000.0})  # measured before search_started
    t0, t1 = make_trial(run_dir, 0, 0.7, 900), make_trial(run_dir, 1, 0.8, 1000)
    plugin.search_started(search=search)
    parent_id = read_parent_run_id(run_dir)
    plugin.trial_finished(search=search, trial=t0)
    # interrupted here; the resumed search starts again and the orchestrator reports trial 0 again
    plugin.search_started(search=search)
    assert read_parent_run_id(run_dir) == parent_id
    client = client_for(default_tracking_uri(run_dir))
    parent = client.get_run(parent_id)
    assert parent.info.status == "RUNNING" and parent.data.tags["resume.count"] == "1"
    assert parent.data.metrics["base_val_accuracy"] == 0.9
    plugin.trial_finished(search=search, trial=t0)
    plugin.trial_finished(search=search, trial=t1)
    plugin.search_finished(search=search, trials=[t0, t1], front=[t0, t1])
    exp = client.get_experiment_by_name("automl-prune/s1").experiment_id
    assert len(client.search_runs([exp], "tags.`automl_prune.role` = 'search'")) == 1
    assert sorted(children(client, parent_id)) == [0, 1]
    assert client.get_run(parent_id).info.status == "FINISHED"


def test_trial_results_arriving_in_another_process_without_search_started(tmp_path: Path) -> None:
    """A Ray driver (or any process) may report trials before it ever called search_started."""
    run_dir = tmp_path / "run"
    search = make_search(run_dir)
    trial = make_trial(run_dir, 5, 0.8, 1000)
    plugin.trial_finished(search=search, trial=trial)
    parent_id = read_parent_run_id(run_dir)
    client = client_for(default_tracking_uri(run_dir))
    assert sorted(children(client, parent_id)) == [5]


def test_search_finished_logs_trials_the_store_never_saw(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    search = make_search(run_dir)
    trials = [make_trial(run_dir, 0, 0.7, 900), make_trial(run_dir, 1, 0.8, 1000)]
    plugin.search_started(search=search)
    plugin.search_finished(search=search, trials=trials, front=trials)
    client = client_for(default_tracking_uri(run_dir))
    assert sorted(children(client, read_parent_run_id(run_dir))) == [0, 1]
    assert json.loads((run_dir / "promotion.json").read_text())["trial_number"] == 1


def test_search_finished_relogs_a_trial_whose_logging_was_killed(tmp_path: Path) -> None:
    """kill -9 between creating a trial's run and ending it leaves it RUNNING; its record is complete,
    so the resumed search does not run it again, and finishing the search must log it properly."""
    run_dir = tmp_path / "run"
    search = make_search(run_dir)
    trials = [make_trial(run_dir, 0, 0.7, 900), make_trial(run_dir, 1, 0.8, 1000)]
    plugin.search_started(search=search)
    plugin.trial_finished(search=search, trial=trials[0])
    parent_id = read_parent_run_id(run_dir)
    client = client_for(default_tracking_uri(run_dir))
    experiment_id = client.get_run(parent_id).info.experiment_id
    tags = {PARENT_TAG: parent_id, "trial_number": "1", "automl_prune.role": "trial"}
    cut_off = client.create_run(experiment_id, run_name="trial-1", tags=tags).info.run_id
    plugin.search_finished(search=search, trials=trials, front=trials)
    active = client.search_runs([experiment_id], f"tags.`{PARENT_TAG}` = '{parent_id}'")
    assert sorted((r.data.tags["trial_number"], r.info.status) for r in active) == [
        ("0", "FINISHED"),
        ("1", "FINISHED"),
    ]
    assert client.get_run(cut_off).info.lifecycle_stage == "deleted"


def test_promote_an_earlier_search(tmp_path: Path) -> None:
    """``automl-prune promote RUN_DIR``: from search.json + trials.jsonl, into the same or another store."""
    run_dir = tmp_path / "run"
    search = make_search(run_dir, name="earlier")
    trials = [
        make_trial(run_dir, 0, 0.7, 900),
        make_trial(run_dir, 1, 0.8, 1000),
        make_trial(run_dir, 2, 0.0, 0, failed=True),
    ]
    (run_dir / "search.json").write_text(search.to_json())
    (run_dir / "trials.jsonl").write_text("".join(json.dumps(t.to_dict()) + "\n" for t in trials))

    # the search was never tracked: promote logs it (parent + nested runs) and registers trial 1
    first = promote_search(run_dir, registered_model="earlier model")
    assert (first.registered_model, first.version, first.promoted, first.trial_number) == (
        "earlier-model",
        "1",
        True,
        1,
    )
    client = client_for(default_tracking_uri(run_dir))
    parent_id = read_parent_run_id(run_dir)
    assert client.get_run(parent_id).info.status == "FINISHED"
    assert sorted(children(client, parent_id)) == [0, 1, 2]

    # again: the same trial run is not registered twice
    again = promote_search(run_dir, registered_model="earlier model")
    assert (again.version, again.promoted) == ("1", True) and "already registered" in again.reason
    assert len(client.search_model_versions("name = 'earlier-model'")) == 1
    assert json.loads((run_dir / "promotion.json").read_text())["version"] == "1"

    # into another store (e.g. the team's server): a parent is made there, the local id file is updated
    other = f"sqlite:///{tmp_path / 'team' / 'mlflow.db'}"
    moved = promote_search(run_dir, tracking_uri=other)
    assert (moved.registered_model, moved.version, moved.promoted) == ("magnitude-resnet20-digits", "1", True)
    assert client_for(other).get_model_version_by_alias("magnitude-resnet20-digits", CHAMPION_ALIAS)


def test_a_model_from_outside_code_is_an_mlflow_model_only_where_it_is_trusted(tmp_path: Path) -> None:
    """The search that built a ``module:factory`` model logs it as an MLflow model that loads with its
    code trusted; ``promote`` of an earlier, untracked run directory does not run its files' code."""
    ref = ModelRef(
        "automl_prune.models.cifar_resnet:resnet20", {"num_classes": 10, "width": 4, "in_channels": 1}
    )

    def trial_from_code(run_dir: Path) -> TrialRecord:
        trial = make_trial(run_dir, 0, 0.8, 1000)
        save_pruned(build_model(ref, DIGITS8), Path(trial.model_dir), model_ref=ref, info=DIGITS8)
        return trial

    searched = tmp_path / "searched"
    run_search(make_search(searched), [trial_from_code(searched)])
    uri = default_tracking_uri(searched)
    decision = json.loads((searched / "promotion.json").read_text())
    assert decision["model_id"] and "plain files" not in decision["reason"]
    mlflow.set_tracking_uri(uri)
    try:
        model_uri = f"models:/{decision['model_id']}"
        champion = mlflow.pyfunc.load_model(model_uri)
        assert champion.metadata.flavors["python_function"]["config"]["trust_code"] is True
        with pytest.raises(UntrustedCodeError):  # the user may still refuse it
            mlflow.pyfunc.load_model(model_uri, model_config={"trust_code": False})
    finally:
        mlflow.set_tracking_uri(None)
    assert champion.predict(np.zeros((2, 1, 8, 8), np.float32)).shape == (2, 10)

    earlier = tmp_path / "earlier"
    trial = trial_from_code(earlier)
    (earlier / "search.json").write_text(make_search(earlier).to_json())
    (earlier / "trials.jsonl").write_text(json.dumps(trial.to_dict()) + "\n")
    promoted = promote_search(earlier)
    assert promoted.version == "1" and promoted.model_id is None and "pyfunc cannot load" in promoted.reason
    run = client_for(default_tracking_uri(earlier)).get_run(promoted.run_id)
    assert run.data.tags["mlflow_model_error"].startswith("UntrustedCodeError")


def test_promote_search_without_a_search(tmp_path: Path) -> None:
    from automl_prune.errors import AutomlPruneError

    with pytest.raises(AutomlPruneError, match="no search"):
        promote_search(tmp_path)


def test_unreachable_server_fails_fast_and_keeps_the_run_dir(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    keep = {
        "study.db": b"\x00optuna",
        "trials.jsonl": b'{"number": 0}\n',
        "mlflow_parent_run_id": b"0123456789abcdef\n",
        "checkpoint.safetensors": b"weights",
    }
    for name, data in keep.items():
        (run_dir / name).write_bytes(data)
    uri = f"http://127.0.0.1:{free_port()}"
    search = make_search(run_dir, tracking_uri=uri)
    trial = make_trial(tmp_path / "elsewhere", 0, 0.8, 1000)
    calls = [
        lambda: plugin.search_started(search=search),
        lambda: plugin.trial_finished(search=search, trial=trial),
        lambda: plugin.search_finished(search=search, trials=[trial], front=[trial]),
        lambda: load_plugins().hook.search_started(search=search),
    ]
    for call in calls:
        start = time.monotonic()
        with pytest.raises(TrackingError) as err:
            call()
        assert time.monotonic() - start < 15
        text = str(err.value)
        assert uri in text and "not reachable" in text and "connection refused" in text
        assert "start the server" in err.value.fix and "--tracking-uri" in err.value.fix
    assert {p.name: p.read_bytes() for p in run_dir.iterdir()} == keep


def test_silent_server_times_out(tmp_path: Path) -> None:
    """A host that accepts connections but never answers: the short timeout, not MLflow's 120 s."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        uri = f"http://127.0.0.1:{listener.getsockname()[1]}"
        start = time.monotonic()
        with pytest.raises(TrackingError, match="no answer within 1 s"):
            check_reachable(uri, timeout=1)
        assert time.monotonic() - start < 10


def test_registered_model_names_and_selection(tmp_path: Path) -> None:
    search = make_search(tmp_path, config={"model": "resnet20", "data": "folder:/data/my imgs"})
    assert registered_model_name(search) == "magnitude-resnet20-folder-data-my-imgs"
    search.registered_model = "team/best:v1"
    assert registered_model_name(search) == "team-best-v1"
    a = TrialRecord(0, "complete", quality=0.8, flops=100, model_dir="x")
    b = TrialRecord(1, "complete", quality=0.9, flops=300, model_dir="y")
    c = TrialRecord(2, "complete", quality=0.8, flops=90, model_dir="z")
    assert select_best([a, b, c], 200) is c
    assert select_best([a, b, c], None) is b
    assert select_best([a, b], 50) is None


def test_parent_id_from_another_store_starts_a_new_parent(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "mlflow_parent_run_id").write_text("0123456789abcdef0123456789abcdef\n")
    plugin.search_started(search=make_search(run_dir))
    new_id = read_parent_run_id(run_dir)
    assert new_id != "0123456789abcdef0123456789abcdef"
    assert client_for(default_tracking_uri(run_dir)).get_run(new_id).info.status == "RUNNING"
