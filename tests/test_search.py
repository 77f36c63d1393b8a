"""End-to-end searches with the outside toy plugin: failures, budget, resume after kill -9, Ray."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from automl_prune.flops import count_flops
from automl_prune.search.config import SearchConfig
from automl_prune.search.orchestrator import run_search
from tests.test_run_dirs import check_complete
from tests.toy import cli, make_distribution, subprocess_env

TOY = [
    "--strategy",
    "toy-keep-first",
    "--model",
    "toy-cnn",
    "--data",
    "digits",
    "--base-epochs",
    "1",
    "--quiet",
]


def toy_config(out: Path, **kwargs: object) -> SearchConfig:
    return SearchConfig(
        strategy="toy-keep-first",
        model="toy-cnn",
        data="digits",
        out=str(out),
        base_epochs=1,
        quiet=True,
        **kwargs,
    )


def test_search_records_failures_and_meets_budget(toy_plugin: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("TOY_RUN_LOG", str(tmp_path / "calls.log"))
    monkeypatch.setenv("TOY_FAIL_CALLS", "2,3")  # call 2 returns NaN, call 3 raises
    out = tmp_path / "run"
    result = run_search(toy_config(out, trials=5, max_flops="0.6"))
    states = [r.state for r in result.trials]
    assert len(result.trials) == 5 and states.count("failed") == 2
    errors = " ".join(r.error for r in result.trials if r.state == "failed")
    assert "non-finite quality" in errors and "toy failure on call 3" in errors
    assert result.front and all(r.feasible for r in result.front)
    base_flops = result.info.base["flops"]
    import automl_prune

    for r in result.front:
        model = automl_prune.load(r.model_dir)
        import torch

        assert count_flops(model, torch.zeros(1, 1, 16, 16)) == r.flops <= 0.6 * base_flops
    rows = list(csv.DictReader((out / "pareto.csv").open()))
    assert {int(row["trial"]) for row in rows} == {r.number for r in result.front}
    for name in ("pareto.png", "study.db", "mlflow.db", "search.json", "trials.jsonl", "promotion.json"):
        assert (out / name).exists(), name


def test_existing_run_dir_is_not_overwritten(toy_plugin: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    config = toy_config(out, trials=1)
    run_search(config)
    before = (out / "trials.jsonl").read_text()
    from automl_prune.errors import AutomlPruneError

    with pytest.raises(AutomlPruneError, match="already holds a search"):
        run_search(config)
    assert (out / "trials.jsonl").read_text() == before


def test_prepare_is_cached_across_searches(toy_plugin: Path, tmp_path: Path, monkeypatch) -> None:
    log = tmp_path / "prepare.log"
    monkeypatch.setenv("TOY_PREPARE_LOG", str(log))
    monkeypatch.setenv("AUTOML_PRUNE_CACHE", str(tmp_path / "cache"))  # not shared with earlier tests
    run_search(toy_config(tmp_path / "first", trials=1))
    run_search(toy_config(tmp_path / "second", trials=2, sampler="tpe"))
    assert log.read_text().splitlines() == ["prepare"]
    run_search(toy_config(tmp_path / "other-seed", trials=1, seed=1))  # another base model: prepared anew
    assert len(log.read_text().splitlines()) == 2


def _wait_for_records(path: Path, n: int, timeout: float) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if path.exists() and len(path.read_text().splitlines()) >= n:
            return
        time.sleep(0.2)
    raise AssertionError(f"{path} did not reach {n} records in {timeout}s")


def test_kill_9_then_resume_finishes_without_redoing_trials(tmp_path: Path) -> None:
    root = make_distribution(tmp_path / "site")
    calls = tmp_path / "calls.log"
    out = tmp_path / "run"
    args = cli("search", *TOY, "--trials", "5", "--out", str(out))
    env = subprocess_env(root, TOY_RUN_LOG=str(calls), TOY_SLEEP="1.5")
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _wait_for_records(out / "trials.jsonl", 2, timeout=240)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    lines_before = (out / "trials.jsonl").read_text().splitlines()
    done_before = [json.loads(line) for line in lines_before]
    calls_before = len(calls.read_text().splitlines())
    finished = subprocess.run(
        [*args, "--resume"], env={**env, "TOY_SLEEP": "0"}, capture_output=True, text=True, timeout=300
    )
    assert finished.returncode == 0, finished.stderr
    records = [json.loads(line) for line in (out / "trials.jsonl").read_text().splitlines()]
    assert len([r for r in records if r["state"] == "complete"]) == 5
    for old in done_before:  # finished trials are kept as they were
        assert old in records
    new_calls = len(calls.read_text().splitlines()) - calls_before
    assert new_calls == 5 - len(done_before)
    assert "Pareto front" in finished.stdout
    after = (out / "trials.jsonl").read_text().splitlines()
    assert all(line in after for line in lines_before)  # byte for byte
    check_complete(out, 5)  # distinct parameter sets, every MLflow run FINISHED


def test_ray_backend_runs_the_same_trials(tmp_path: Path) -> None:
    root = make_distribution(tmp_path / "site")
    out = tmp_path / "run"
    args = cli("search", *TOY, "--trials", "3", "--backend", "ray", "--workers", "2", "--out", str(out))
    done = subprocess.run(args, env=subprocess_env(root), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    records = [json.loads(line) for line in (out / "trials.jsonl").read_text().splitlines()]
    assert sorted(r["number"] for r in records) == [0, 1, 2]
    assert all(r["state"] == "complete" for r in records)
    assert (out / "pareto.csv").exists() and (out / "mlflow.db").exists()


def test_repeated_parameters_are_not_run_twice() -> None:
    import optuna

    from automl_prune.search.optuna_backend import ask_new, counted_trials

    space = {"x": optuna.distributions.CategoricalDistribution([1, 2])}
    study = optuna.create_study(
        directions=["maximize", "minimize"], sampler=optuna.samplers.RandomSampler(seed=0)
    )
    for _ in range(2):
        trial = ask_new(study, space)
        study.tell(trial, [float(trial.params["x"]), 1.0])
    assert sorted(t.params["x"] for t in study.trials if t.state.name == "COMPLETE") == [1, 2]
    assert counted_trials(study) == 2
    repeats = [t for t in study.trials if "duplicate_of" in t.user_attrs]
    assert all(t.state.name == "PRUNED" for t in repeats)


@pytest.mark.parametrize(("model", "data_args"), [("resnet20", {}), ("ddpm-unet-tiny", {"size": 16})])
def test_unreachable_budget_fails_before_base_training(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, model: str, data_args: dict
) -> None:
    """The smallest reachable FLOPs depend on the architecture only, so no base model is trained (and
    no run directory is made) before the budget is found unreachable."""
    from automl_prune.errors import BudgetError
    from automl_prune.search import setup

    def no_training(*args, **kwargs):
        raise AssertionError("the base model was built before the budget check")

    monkeypatch.setattr(setup, "get_base_model", no_training)
    config = SearchConfig(
        strategy="magnitude",
        model=model,
        data="digits",
        data_args=data_args,
        out=str(tmp_path / "run"),
        max_flops="0.002",
        overrides=["target_flops_ratio=0.001..0.002"],
        quiet=True,
    )
    with pytest.raises(BudgetError, match="reaches at its smallest"):
        run_search(config)
    assert not (tmp_path / "run").exists()


def test_trials_get_artifacts_prepared_for_their_prepare_time_values(
    toy_plugin: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``prepare`` gets the space's initial values of ``prepare_params``; a trial with other values gets
    artifacts prepared for them, once per process, through the disk cache a later search reuses."""
    from automl_prune_toy import KeepFirst

    from automl_prune.search.setup import plan_search, prepare_search

    log = tmp_path / "prepare.log"
    monkeypatch.setenv("TOY_PREPARE_LOG", str(log))
    monkeypatch.setenv("AUTOML_PRUNE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(KeepFirst, "prepare_params", ("width_ratio",))

    def calls() -> int:
        return len(log.read_text().splitlines())

    prepared = prepare_search(plan_search(toy_config(tmp_path / "first")))
    assert prepared.settings == {"width_ratio": 0.5} and calls() == 1
    assert prepared.artifacts_for({"width_ratio": 0.5}) is prepared.artifacts
    other = prepared.artifacts_for({"width_ratio": 0.75})
    assert other is not prepared.artifacts and calls() == 2
    assert prepared.artifacts_for({"width_ratio": 0.75}) is other and calls() == 2  # kept in memory
    again = prepare_search(plan_search(toy_config(tmp_path / "second")))
    again.artifacts_for({"width_ratio": 0.75})
    assert calls() == 2  # both from the disk cache
    context = prepared.context
    assert context.budget_param == "width_ratio"
    assert context.target_flops({"width_ratio": 0.25}) == 0.25 * context.base_flops
    a, b = context.figure_path("toy"), context.figure_path("toy", ".svg")
    assert a.parent == b.parent == Path(context.run_dir) / "figures" and a.suffix == ".png" and a != b


def test_a_space_without_the_prepare_params_fails_at_plan_time(
    toy_plugin: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from automl_prune_toy import KeepFirst

    from automl_prune.errors import SpaceError
    from automl_prune.search.setup import plan_search

    monkeypatch.setattr(KeepFirst, "prepare_params", ("explainer_epochs",))
    with pytest.raises(SpaceError, match="explainer_epochs"):
        plan_search(toy_config(tmp_path / "run"))


def test_the_optuna_study_names_objectives_and_keeps_trial_details(toy_plugin: Path, tmp_path: Path) -> None:
    """optuna-dashboard reads the study: named objectives, per-trial details and the FLOPs constraint."""
    import optuna

    out = tmp_path / "run"
    result = run_search(toy_config(out, trials=3, max_flops="0.6"))
    study = optuna.load_study(study_name=None, storage=f"sqlite:///{out / 'study.db'}")
    assert study.metric_names == ["val_accuracy", "flops"]
    complete = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    records = {r.number: r for r in result.trials if r.state == "complete"}
    assert complete and {t.number for t in complete} == set(records)
    for t in complete:
        record = records[t.number]
        attrs = t.user_attrs
        assert attrs["n_params"] == record.n_params and attrs["latency_ms"] == record.latency_ms
        assert all(attrs[k] == v for k, v in record.metrics.items())
        assert (out / attrs["model_dir"]).resolve() == Path(record.model_dir).resolve()
        assert attrs["feasible"] == record.feasible
        assert set(t.constraints) == {"flops_over_budget"}
        assert (t.constraints["flops_over_budget"] <= 0) == record.feasible
    assert {t.number for t in study.best_trials} <= {r.number for r in result.trials if r.feasible}


def test_trial_user_attrs_carry_test_metrics_and_a_relative_model_dir(tmp_path: Path) -> None:
    from automl_prune.search.optuna_backend import trial_attrs
    from automl_prune.search.records import TrialRecord

    record = TrialRecord(
        number=1,
        state="complete",
        n_params=10,
        latency_ms=1.5,
        speedup=1.25,
        feasible=True,
        metrics={"test_accuracy": 0.75, "val_accuracy": 0.8, "broken": float("nan")},
        model_dir=str(tmp_path / "trials" / "1" / "model"),
    )
    assert trial_attrs(record, tmp_path) == {
        "n_params": 10,
        "latency_ms": 1.5,
        "speedup": 1.25,
        "latency_noisy": False,
        "feasible": True,
        "model_dir": "trials/1/model",
        "test_accuracy": 0.75,
        "val_accuracy": 0.8,
    }
