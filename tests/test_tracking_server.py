"""The tracker against a real ``mlflow server`` (a subprocess on 127.0.0.1, proxied artifacts).

The ``mlflow_server`` fixture is module-scoped and reusable: it starts
``mlflow server --backend-store-uri sqlite:///<tmp>/db.sqlite --serve-artifacts --artifacts-destination
<tmp>/artifacts --workers 1`` on a free port, polls ``/health`` for at most ``STARTUP_TIMEOUT_S`` and
always terminates the server's process group. Start-up takes about 5-6 s on 2 CPU cores.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import mlflow
import pytest
import torch
from mlflow import MlflowClient
from mlflow.entities import ViewType
from safetensors.torch import load_file, save_file

import automl_prune
from automl_prune.errors import TrackingError
from automl_prune.search.records import SearchInfo, TrialRecord
from automl_prune.tracking import plugin
from automl_prune.tracking.registry import CHAMPION_ALIAS
from automl_prune.tracking.runs import read_parent_run_id

STARTUP_TIMEOUT_S = 90
pytestmark = pytest.mark.timeout(300)


@dataclass
class MlflowServer:
    url: str
    root: Path  # holds db.sqlite, artifacts/ and server.log
    process: subprocess.Popen
    startup_s: float

    def client(self) -> MlflowClient:
        return MlflowClient(tracking_uri=self.url, registry_uri=self.url)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=1) as resp:
            return resp.status == 200
    except OSError:
        return False


def _stop(proc: subprocess.Popen) -> None:
    """Terminate the server and its workers (their own process group, started by us), then reap it."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=15)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=15)


def start_mlflow_server(root: Path, timeout: float = STARTUP_TIMEOUT_S) -> MlflowServer:
    """Start a real tracking server on a free port and wait (bounded) until ``/health`` answers."""
    mlflow_bin = Path(sys.executable).with_name("mlflow")
    if not mlflow_bin.exists():
        pytest.skip(f"no mlflow executable beside {sys.executable}")
    root.mkdir(parents=True, exist_ok=True)
    last_log = ""
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}  # offline machines: no usage pings
    for _attempt in range(3):  # another process may take the free port before the server binds it
        port = _free_port()
        url = f"http://127.0.0.1:{port}"
        log_path = root / "server.log"
        cmd = [
            str(mlflow_bin),
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
            "--backend-store-uri",
            f"sqlite:///{root / 'db.sqlite'}",
            "--serve-artifacts",
            "--artifacts-destination",
            str(root / "artifacts"),
        ]
        start = time.monotonic()
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                cmd, stdout=log, stderr=subprocess.STDOUT, cwd=root, env=env, start_new_session=True
            )
        try:
            while time.monotonic() - start < timeout:
                if _healthy(url):
                    return MlflowServer(url, root, proc, time.monotonic() - start)
                if proc.poll() is not None:
                    break
                time.sleep(0.25)
        except BaseException:
            _stop(proc)
            raise
        _stop(proc)
        last_log = log_path.read_text(errors="replace")[-3000:]
    raise RuntimeError(f"mlflow server did not start within {timeout} s:\n{last_log}")


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    server = start_mlflow_server(tmp_path_factory.mktemp("mlflow-server"))
    print(f"mlflow server up at {server.url} after {server.startup_s:.1f} s")
    try:
        yield server
    finally:
        _stop(server.process)


# --------------------------------------------------------------------------------------------- tests


def _trial(run_dir: Path, number: int, quality: float, flops: int) -> TrialRecord:
    model_dir = run_dir / "trials" / str(number) / "model"
    model_dir.mkdir(parents=True)
    layer = torch.nn.Linear(4, 2 + number)
    state = {k: v.contiguous() for k, v in layer.state_dict().items()}
    save_file(state, str(model_dir / "model.safetensors"))
    (model_dir / "spec.json").write_text(json.dumps({"arch": "linear", "out": 2 + number}))
    return TrialRecord(
        number=number,
        state="complete",
        params={"ratio": 0.5},
        quality=quality,
        flops=flops,
        n_params=10,
        latency_ms=0.1,
        target_flops=flops,
        feasible=True,
        model_dir=str(model_dir),
        wall_time_s=1.0,
    )


def _search(run_dir: Path, name: str, url: str) -> SearchInfo:
    run_dir.mkdir(parents=True, exist_ok=True)
    return SearchInfo(
        name=name,
        strategy="magnitude",
        run_dir=run_dir,
        quality_metric="accuracy",
        base={"quality": 0.9, "flops": 2000.0},
        max_flops=1500.0,
        config={"model": "resnet20", "data": "digits", "seed": 0},
        conventions={"flops": "fvcore MACs"},
        tracking_uri=url,
        registered_model="server-model",
    )


def test_hooks_against_a_real_server(mlflow_server: MlflowServer, tmp_path: Path) -> None:
    client = mlflow_server.client()
    run_dir = tmp_path / "run"
    search = _search(run_dir, "on-server", mlflow_server.url)
    trials = [_trial(run_dir, 0, 0.7, 800), _trial(run_dir, 1, 0.8, 1200)]
    plugin.search_started(search=search)
    for t in trials:
        plugin.trial_finished(search=search, trial=t)
    plugin.search_finished(search=search, trials=trials, front=trials)

    assert not (run_dir / "mlflow.db").exists() and not (run_dir / "mlartifacts").exists()
    exp = client.get_experiment_by_name("automl-prune/on-server")
    assert exp.artifact_location.startswith("mlflow-artifacts:")  # the server chose, and proxies it
    parent_id = read_parent_run_id(run_dir)
    parent = client.get_run(parent_id)
    assert parent.info.status == "FINISHED" and parent.data.params["strategy"] == "magnitude"
    kids = client.search_runs([exp.experiment_id], f"tags.`mlflow.parentRunId` = '{parent_id}'", ViewType.ALL)
    by_number = {int(r.data.tags["trial_number"]): r for r in kids}
    assert sorted(by_number) == [0, 1]
    assert by_number[1].data.metrics["val_accuracy"] == 0.8
    assert {f.path for f in client.list_artifacts(by_number[1].info.run_id, "model")} == {
        "model/model.safetensors",
        "model/spec.json",
    }
    # the artifacts really sit in the server's --artifacts-destination
    assert list((mlflow_server.root / "artifacts").rglob("model.safetensors"))

    mv = client.get_model_version_by_alias("server-model", CHAMPION_ALIAS)
    assert str(mv.version) == "1" and mv.run_id == by_number[1].info.run_id
    assert mv.tags["trial_number"] == "1" and mv.tags["flops"] == "1200"
    got = Path(
        mlflow.artifacts.download_artifacts(
            artifact_uri=mv.source, tracking_uri=mlflow_server.url, dst_path=str(tmp_path / "dl")
        )
    )
    want = load_file(trials[1].model_dir + "/model.safetensors")
    assert torch.equal(load_file(str(got / "model.safetensors"))["weight"], want["weight"])

    # a second, worse search on the same server: a new version, the alias stays
    run_dir2 = tmp_path / "run2"
    search2 = _search(run_dir2, "on-server-2", mlflow_server.url)
    worse = [_trial(run_dir2, 0, 0.75, 1000)]
    plugin.search_started(search=search2)
    plugin.trial_finished(search=search2, trial=worse[0])
    plugin.search_finished(search=search2, trials=worse, front=worse)
    decision = json.loads((run_dir2 / "promotion.json").read_text())
    assert (decision["version"], decision["promoted"]) == ("2", False) and "kept" in decision["reason"]
    assert str(client.get_model_version_by_alias("server-model", CHAMPION_ALIAS).version) == "1"


def test_resume_against_a_real_server(mlflow_server: MlflowServer, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    search = _search(run_dir, "resumed", mlflow_server.url)
    plugin.search_started(search=search)
    first = read_parent_run_id(run_dir)
    plugin.search_started(search=search)
    assert read_parent_run_id(run_dir) == first
    assert mlflow_server.client().get_run(first).data.tags["resume.count"] == "1"


def test_server_that_went_away(tmp_path: Path) -> None:
    """Stopped server, same URL: a quick, clear TrackingError and the run directory untouched."""
    server = start_mlflow_server(tmp_path / "srv")
    run_dir = tmp_path / "run"
    search = _search(run_dir, "gone", server.url)
    try:
        plugin.search_started(search=search)
    finally:
        _stop(server.process)
    before = {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file()}
    start = time.monotonic()
    with pytest.raises(TrackingError, match="not reachable"):
        plugin.trial_finished(search=search, trial=_trial(run_dir, 0, 0.5, 100))
    assert time.monotonic() - start < 15
    assert {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file()} == before


def test_a_whole_search_against_a_real_server(
    mlflow_server: MlflowServer, toy_plugin: Path, tmp_path: Path
) -> None:
    from automl_prune.search.config import SearchConfig
    from automl_prune.search.orchestrator import run_search

    config = SearchConfig(
        strategy="toy-keep-first",
        model="toy-cnn",
        data="digits",
        out=str(tmp_path / "run"),
        trials=3,
        max_flops="0.8",
        base_epochs=1,
        quiet=True,
        tracking_uri=mlflow_server.url,
        registered_model="toy-search",
    )
    result = run_search(config)
    client = mlflow_server.client()
    experiment = client.get_experiment_by_name(f"automl-prune/{result.info.name}")
    runs = client.search_runs([experiment.experiment_id], run_view_type=ViewType.ALL)
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId")]
    assert len(runs) == 4 and len(children) == 3
    assert {float(r.data.metrics["macs"]) for r in children} == {float(t.flops) for t in result.trials}
    champion = client.get_model_version_by_alias("toy-search", CHAMPION_ALIAS)
    best = max((t for t in result.front), key=lambda t: t.quality)
    assert champion.tags["trial_number"] == str(best.number)
    assert not (tmp_path / "run" / "mlflow.db").exists()  # everything went to the server

    # the champion is an MLflow model the server serves: pyfunc loads it and predicts as automl_prune.load
    mlflow.set_tracking_uri(mlflow_server.url)
    mlflow.set_registry_uri(mlflow_server.url)
    try:
        loaded = mlflow.pyfunc.load_model(f"models:/toy-search@{CHAMPION_ALIAS}")
    finally:
        mlflow.set_tracking_uri(None)
        mlflow.set_registry_uri(None)
    x = torch.randn(2, 1, 16, 16)
    with torch.no_grad():
        assert torch.equal(torch.from_numpy(loaded.predict(x.numpy())), automl_prune.load(best.model_dir)(x))
