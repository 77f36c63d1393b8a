"""A real Ray cluster: a head node and a second node started with ``ray start`` on this machine, a search
pointed at it with ``--address``, and the second node killed in the middle of a trial. The trial is
retried on the surviving node (or recorded as failed), the search finishes, and trials.jsonl, pareto.csv
and the MLflow runs are complete.

The nodes are started by the fixture with ``ray start --block`` in their own sessions, so that each node
can be killed alone (all processes of its session) without ``ray stop``, which would stop every Ray on
the machine (other test runs' included).

A trial Ray cannot finish even after its retries is recorded as failed: a fast test of its own.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.toy import cli, make_distribution, subprocess_env

pytestmark = pytest.mark.timeout(900)

RAY = str(Path(sys.executable).with_name("ray"))
TOY = ["--strategy", "toy-keep-first", "--model", "toy-cnn", "--data", "digits", "--base-epochs", "1"]
TRIALS = 4
SLEEP = "4"  # seconds per trial: long enough to kill a node in the middle of one


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def session_pids(sid: int) -> list[int]:
    """The processes of session ``sid`` (a node's ``ray start --block`` and everything it started)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) ": state ppid pgrp session ...
        if int(fields[3]) == sid and fields[0] != "Z":
            pids.append(int(entry.name))
    return pids


def kill_session(proc: subprocess.Popen) -> None:
    """SIGKILL every process of ``proc``'s session (a node dies at once, no draining) and reap it."""
    for _ in range(50):
        pids = session_pids(proc.pid)
        if not pids:
            break
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.1)
    proc.wait(timeout=30)
    assert not session_pids(proc.pid), "processes of a killed Ray node are still running"


@dataclass
class Cluster:
    address: str
    env: dict[str, str]  # what a driver needs: the plugin, the cache and the cluster's auth token
    head: subprocess.Popen
    worker: subprocess.Popen
    worker_calls: Path  # one line per trial run on the second node (TOY_RUN_LOG, set on that node only)
    logs: Path


def start_node(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    ports = [
        "--node-manager-port", str(free_port()), "--object-manager-port", str(free_port()),
        "--dashboard-agent-listen-port", str(free_port()), "--dashboard-agent-grpc-port", str(free_port()),
        "--runtime-env-agent-port", str(free_port()), "--metrics-export-port", str(free_port()),
    ]  # fmt: skip
    with log.open("w") as out:
        return subprocess.Popen(
            [RAY, "start", *args, "--num-cpus", "1", "--object-store-memory", str(100 * 2**20), *ports,
             "--disable-usage-stats", "--block"],
            env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip


def wait_for(predicate, timeout: float, what: str, proc: subprocess.Popen | None = None) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"{what}: the process exited with {proc.returncode} first")
        time.sleep(0.2)
    raise AssertionError(f"{what} did not happen within {timeout}s")


def alive_nodes(cluster_env: dict[str, str], address: str) -> int:
    done = subprocess.run(
        [sys.executable, "-c",
         "import ray, sys; ray.init(address=sys.argv[1], log_to_driver=False, configure_logging=False);"
         "print(sum(n['Alive'] for n in ray.nodes()))", address],
        env=cluster_env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    return int(done.stdout.split()[-1]) if done.returncode == 0 and done.stdout.split() else 0


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A head node and a second node joining it, both on this machine with one CPU each.

    Token authentication with a token of its own (Ray enables it on ``ray start --head`` as soon as
    ``~/.ray/auth_token`` exists, and then every node and driver needs it). Ray's temp dir is short
    (Unix socket paths are limited to 107 bytes) and removed afterwards.
    """
    root = make_distribution(tmp_path_factory.mktemp("site"))
    logs = tmp_path_factory.mktemp("ray-logs")
    temp_dir = Path(tempfile.mkdtemp(prefix="ray", dir="/tmp"))
    env = subprocess_env(
        root,
        AUTOML_PRUNE_CACHE=str(tmp_path_factory.getbasetemp() / "cache"),  # as conftest's _private_cache
        RAY_AUTH_MODE="token",
        RAY_AUTH_TOKEN=secrets.token_hex(32),
        TOY_SLEEP=SLEEP,
    )
    env.pop("TOY_RUN_LOG", None)
    port = free_port()
    address = f"127.0.0.1:{port}"
    worker_calls = logs / "worker_calls.log"
    nodes: list[subprocess.Popen] = []
    try:
        head_args = ["--head", "--node-ip-address", "127.0.0.1", "--port", str(port),
                     "--dashboard-port", str(free_port()), "--include-dashboard=false",
                     "--temp-dir", str(temp_dir)]  # fmt: skip
        nodes.append(start_node(head_args, env, logs / "head.log"))
        wait_for(lambda: alive_nodes(env, address) == 1, 120, "the head node starting", nodes[0])
        worker_env = {**env, "TOY_RUN_LOG": str(worker_calls)}
        worker_args = ["--address", address, "--node-ip-address", "127.0.0.1"]
        nodes.append(start_node(worker_args, worker_env, logs / "worker.log"))
        wait_for(lambda: alive_nodes(env, address) == 2, 120, "the second node joining", nodes[1])
        yield Cluster(address, env, nodes[0], nodes[1], worker_calls, logs)
    finally:
        for node in reversed(nodes):
            kill_session(node)
        shutil.rmtree(temp_dir, ignore_errors=True)


def mlflow_runs(out: Path) -> list:
    from mlflow import MlflowClient

    uri = f"sqlite:///{(out / 'mlflow.db').resolve()}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    ids = [e.experiment_id for e in client.search_experiments() if e.name.startswith("automl-prune/")]
    return list(client.search_runs(ids, max_results=1000)) if ids else []


@pytest.mark.slow
def test_search_survives_losing_a_node_mid_trial(ray_cluster: Cluster, tmp_path: Path) -> None:
    out = tmp_path / "run"
    args = cli("search", *TOY, "--trials", str(TRIALS), "--backend", "ray", "--address", ray_cluster.address,
               "--workers", "2", "--quiet", "--out", str(out))  # fmt: skip
    with (tmp_path / "search.log").open("w") as log:
        search = subprocess.Popen(args, env=ray_cluster.env, stdout=log, stderr=subprocess.STDOUT)
        try:
            # a trial started on the second node (it logs its parameters, then sleeps): kill that node
            wait_for(ray_cluster.worker_calls.exists, 400, "a trial on the second node", search)
            kill_session(ray_cluster.worker)
            search.wait(timeout=400)
        finally:
            if search.poll() is None:
                search.kill()
                search.wait()
    output = (tmp_path / "search.log").read_text()
    assert search.returncode == 0, output[-4000:]

    interrupted = ray_cluster.worker_calls.read_text().split()
    assert len(interrupted) == 1  # the second node ran one trial and died in it
    records = [json.loads(line) for line in (out / "trials.jsonl").read_text().splitlines()]
    numbers = [r["number"] for r in records]
    assert len(records) == TRIALS and len(set(numbers)) == TRIALS, numbers
    for r in records:
        assert r["state"] == "complete" or (r["state"] == "failed" and r["error"]), r
    # the interrupted trial's parameters were retried on the head node, or recorded as failed
    assert interrupted[0] in {str(r["params"]["width_ratio"]) for r in records}, (interrupted, records)
    assert (out / "pareto.csv").exists()

    runs = mlflow_runs(out)
    trials = [r for r in runs if r.data.tags.get("automl_prune.role") == "trial"]
    assert sorted(int(r.data.tags["trial_number"]) for r in trials) == sorted(numbers)
    statuses = {r.info.run_name: r.info.status for r in runs}
    assert set(statuses.values()) <= {"FINISHED", "FAILED"}, statuses


def test_a_trial_ray_could_not_finish_is_recorded_as_failed(tmp_path: Path) -> None:
    """Tune's on_trial_error (the retries spent, no record came back): one failed record, its reason the
    last try's error, under a trial number of its own; a trial that reported before dying is not doubled."""
    from automl_prune.search import ray_backend

    got: list = []
    key = str(tmp_path)
    (tmp_path / "trials" / "0000").mkdir(parents=True)  # claimed by the attempt that died
    error = (
        "Failure # 1 (occurred at 2025-01-01_00-00-00)\nray.exceptions.ActorDiedError: first\n"
        "Failure # 2 (occurred at 2025-01-01_00-00-09)\n"
        "ray.exceptions.ActorDiedError: The actor died because its node has died.\n\tclass_name: x\n"
    )
    lost = SimpleNamespace(config={"width_ratio": 0.5}, last_result={}, get_error=lambda: error)
    reported = SimpleNamespace(config={"width_ratio": 0.7}, last_result={"record": "{}"}, get_error=str)
    ray_backend._LISTENERS[key] = got.append
    try:
        callback = ray_backend.ReportTrial(key)
        callback.on_trial_error(iteration=1, trials=[], trial=lost)
        callback.on_trial_error(iteration=2, trials=[], trial=reported)
    finally:
        ray_backend._LISTENERS.pop(key)
    assert len(got) == 1
    record = got[0]
    assert (record.number, record.state, record.params) == (1, "failed", {"width_ratio": 0.5})
    assert record.error == (
        "Ray could not finish the trial (2 tries): "
        "ray.exceptions.ActorDiedError: The actor died because its node has died."
    )
