"""Run directories: one search at a time (a lock), self-contained (moved or copied, they resume in place),
and a resume resumes the same search (Optuna and Ray, also after kill -9)."""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from rich.console import Console

from automl_prune.errors import AutomlPruneError
from automl_prune.search.config import SearchConfig
from automl_prune.search.orchestrator import run_search
from automl_prune.search.rundir import LOCK_FILE, RunDirBusyError, lock_run_dir
from tests.toy import cli, make_distribution, subprocess_env

pytestmark = pytest.mark.timeout(600)

TOY = ["--strategy", "toy-keep-first", "--model", "toy-cnn", "--data", "digits", "--base-epochs", "1"]


def toy_config(out: Path, **kwargs: object) -> SearchConfig:
    return SearchConfig(
        strategy="toy-keep-first", model="toy-cnn", data="digits", out=str(out), base_epochs=1, quiet=True,
        **kwargs,
    )  # fmt: skip


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def records(out: Path) -> list[dict]:
    return [json.loads(line) for line in lines(out / "trials.jsonl")]


def wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise AssertionError(f"{what} did not happen within {timeout}s")


def mlflow_runs(out: Path) -> list:
    """Every MLflow run in the run directory's own store (parent and trials)."""
    from mlflow import MlflowClient

    uri = f"sqlite:///{(out / 'mlflow.db').resolve()}"
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    ids = [e.experiment_id for e in client.search_experiments() if e.name.startswith("automl-prune/")]
    return list(client.search_runs(ids, max_results=1000)) if ids else []


def check_complete(out: Path, n: int) -> None:
    """``n`` distinct trials in trials.jsonl and pareto.csv's source, one FINISHED MLflow run each."""
    done = records(out)
    assert sorted(r["number"] for r in done) == sorted({r["number"] for r in done})
    params = [json.dumps(r["params"], sort_keys=True) for r in done]
    assert len(done) == n and len(set(params)) == n, params
    assert (out / "pareto.csv").exists()
    runs = mlflow_runs(out)
    trials = [r for r in runs if r.data.tags.get("automl_prune.role") == "trial"]
    assert sorted(int(r.data.tags["trial_number"]) for r in trials) == sorted(r["number"] for r in done)
    assert {r.info.status for r in runs} == {"FINISHED"}, [(r.info.run_name, r.info.status) for r in runs]


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")}


# --------------------------------------------------------------------------------------------- locking


def test_two_searches_started_at_once_on_one_run_dir(tmp_path: Path) -> None:
    """Two fresh starts on one --out: one runs, the other is refused with exit 2 naming the holder, and
    the records of the one that ran are complete (no lost trials, no half-built MLflow store)."""
    root = make_distribution(tmp_path / "site")
    out = tmp_path / "run"
    env = subprocess_env(root, TOY_SLEEP="2")
    args = cli("search", *TOY, "--trials", "3", "--quiet", "--out", str(out))
    procs = [subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)]
    procs.append(subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    outputs = [p.communicate(timeout=400) for p in procs]
    done = [(p.pid, p.returncode, *output) for p, output in zip(procs, outputs, strict=True)]
    codes = sorted(code for _, code, _, _ in done)
    assert codes == [0, 2], [(code, err[-1500:]) for _, code, _, err in done]
    winner = next(pid for pid, code, _, _ in done if code == 0)
    refused = next(err for _, code, _, err in done if code == 2)
    assert "Traceback" not in refused and "error:" in refused and "fix:" in refused
    assert "in use by" in refused and f"pid {winner}" in refused, refused
    check_complete(out, 3)
    assert not (out / LOCK_FILE).exists()


def test_a_busy_run_dir_refuses_resume_and_promote(tmp_path: Path) -> None:
    """While a search runs, `--resume` and `promote` on its run directory exit 2 and change nothing;
    the running search ends with all its trials in trials.jsonl, pareto.csv and MLflow."""
    root = make_distribution(tmp_path / "site")
    out = tmp_path / "run"
    env = subprocess_env(root, TOY_SLEEP="4")
    first = subprocess.Popen(
        cli("search", *TOY, "--trials", "4", "--quiet", "--out", str(out)),
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    wait_for(lambda: (out / "search.json").exists() or first.poll() is not None, 300, "search.json")
    others = [
        subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for cmd in (
            cli("search", *TOY, "--out", str(out), "--resume", "--trials", "6", "--quiet"),
            cli("promote", str(out)),
        )
    ]
    for proc in others:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 2, err[-2000:]
        assert f"pid {first.pid}" in err and "Traceback" not in err, err
    assert first.poll() is None, "the first search ended before the others were refused: inconclusive"
    _, err = first.communicate(timeout=400)
    assert first.returncode == 0, err[-3000:]
    check_complete(out, 4)
    assert not (out / "promotion.json").exists() or json.loads((out / "promotion.json").read_text())


HOLD = """
import fcntl, json, os, socket, sys, time
os.makedirs(sys.argv[1])
fd = os.open(os.path.join(sys.argv[1], "run.lock"), os.O_RDWR | os.O_CREAT)
fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
holder = {"pid": os.getpid(), "host": socket.gethostname(), "started": "2030-01-01", "command": "search"}
os.write(fd, json.dumps(holder).encode())
print("held", flush=True)
time.sleep(600)
"""  # the lock protocol of automl_prune.search.rundir: flock on run.lock, the holder as JSON


def test_a_lock_held_is_respected_and_a_stale_one_taken_over(toy_plugin: Path, tmp_path: Path) -> None:
    """A live holder refuses the search before anything is written; after the holder is killed
    (kill -9 leaves its lock file behind) the next search takes the lock over and says so."""
    out = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RunDirBusyError) as refused:
            run_search(toy_config(out, trials=1))
        assert f"pid {holder.pid}" in refused.value.problem and "search" in refused.value.problem
        assert sorted(p.name for p in out.iterdir()) == [LOCK_FILE]  # nothing written
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()
    assert json.loads((out / LOCK_FILE).read_text())["pid"] == holder.pid  # left behind by kill -9
    printed = io.StringIO()
    result = run_search(toy_config(out, trials=1), console=Console(file=printed, width=200))
    assert len(result.trials) == 1
    assert f"took over the stale lock of `automl-prune search` (pid {holder.pid}" in printed.getvalue()
    assert not (out / LOCK_FILE).exists()


def test_without_flock_the_lock_falls_back_to_the_pid(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a file system without ``flock``: a holder on this host whose pid lives is respected, one whose
    pid is gone is stale and taken over."""
    import socket

    from automl_prune.search import rundir

    monkeypatch.setattr(rundir, "_try_flock", lambda fd: None)
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    for pid, alive in ((os.getppid(), True), (gone.pid, False)):
        holder = {"pid": pid, "host": socket.gethostname(), "started": "2030-01-01", "command": "search"}
        (tmp_path / LOCK_FILE).write_text(json.dumps(holder))
        if alive:
            with pytest.raises(RunDirBusyError, match=f"pid {pid} on host"):
                rundir.lock_run_dir(tmp_path)
            continue
        lock = rundir.lock_run_dir(tmp_path)
        assert lock.previous is not None and lock.previous.pid == pid
        assert json.loads((tmp_path / LOCK_FILE).read_text())["pid"] == os.getpid()
        lock.release()
        assert not (tmp_path / LOCK_FILE).exists()


# ---------------------------------------------------------------------------------- self-contained


def test_a_copied_run_dir_resumes_fronts_and_promotes_in_place(toy_plugin: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from automl_prune.cli import app
    from automl_prune.tracking.registry import promote_search

    original, copy = tmp_path / "original", tmp_path / "elsewhere" / "copy"
    run_search(toy_config(original, trials=2))
    copy.parent.mkdir()
    shutil.copytree(original, copy)
    before = snapshot(original)
    trials_bytes = (original / "trials.jsonl").read_bytes()

    result = run_search(toy_config(copy, trials=3), resume=True)

    assert snapshot(original) == before and (original / "trials.jsonl").read_bytes() == trials_bytes
    stored = records(copy)
    assert len(stored) == 3 and stored[:2] == [json.loads(x) for x in trials_bytes.decode().splitlines()]
    assert all(r["model_dir"] == f"trials/{r['number']:04d}/model" for r in stored)  # relative
    assert json.loads((copy / "search.json").read_text())["run_dir"] == "."
    for r in result.trials:
        assert Path(r.model_dir).resolve().is_relative_to(copy.resolve())
    runs = mlflow_runs(copy)
    assert len(runs) == 4 and {r.info.status for r in runs} == {"FINISHED"}
    artifacts = (copy / "mlartifacts").resolve().as_uri()
    assert all(r.info.artifact_uri.startswith(artifacts) for r in runs)
    newest = str(stored[-1]["number"])  # the trial the resumed copy ran
    trial_run = next(r for r in runs if r.data.tags.get("trial_number") == newest)
    [model] = trial_run.outputs.model_outputs  # the trial's MLflow model, stored in the copy's store
    assert (copy / "mlartifacts" / "models" / model.model_id / "artifacts" / "spec.json").is_file()

    shown = CliRunner().invoke(app, ["front", str(copy)])
    assert shown.exit_code == 0 and "Pareto front" in shown.output, shown.output
    decision = promote_search(copy)
    assert decision.version is not None and decision.source.startswith(artifacts)
    assert snapshot(original) == before


# ----------------------------------------------------------------------------- resume = same search


def test_resume_refuses_another_search_and_resumes_the_stored_one(tmp_path: Path) -> None:
    root = make_distribution(tmp_path / "site")
    env = subprocess_env(root)
    out = tmp_path / "run"
    first = subprocess.run(
        cli("search", *TOY, "--trials", "1", "--max-flops", "0.6", "--quiet", "--out", str(out)),
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert first.returncode == 0, first.stderr[-2000:]
    before = (out / "trials.jsonl").read_bytes()
    changed = subprocess.run(
        cli(
            "search", "--strategy", "toy-keep-first", "--model", "toy-cnn", "--model-arg", "width=4",
            "--data", "digits", "--max-flops", "0.3", "--backend", "ray", "--trials", "2",
            "--out", str(out), "--resume",
        ),
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert changed.returncode == 2, changed.stderr[-2000:]
    err = " ".join(changed.stderr.split())
    assert '--model-arg {"width": 4} (stored: none)' in err, err
    assert "--max-flops '0.3' (stored: '0.6')" in err and "--backend 'ray' (stored: 'optuna')" in err, err
    assert "fix:" in err and "Traceback" not in err
    assert (out / "trials.jsonl").read_bytes() == before
    # none of them given: the stored search goes on (here to 2 trials)
    same = subprocess.run(
        cli("search", "--out", str(out), "--resume", "--trials", "2", "--quiet"),
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert same.returncode == 0, same.stderr[-2000:]
    done = records(out)
    assert len(done) == 2 and (out / "trials.jsonl").read_bytes().startswith(before)
    stored = json.loads((out / "search.json").read_text())
    assert stored["max_flops"] == pytest.approx(0.6 * stored["base"]["flops"])


def test_resume_in_python_refuses_a_changed_setting(toy_plugin: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    run_search(toy_config(out, trials=1))
    with pytest.raises(AutomlPruneError, match=r"--seed 1 \(stored: 0\)"):
        run_search(toy_config(out, trials=2, seed=1), resume=True)
    with pytest.raises(AutomlPruneError, match=r"--strategy 'magnitude' \(stored: 'toy-keep-first'\)"):
        run_search(SearchConfig("magnitude", "toy-cnn", "digits", str(out), base_epochs=1), resume=True)
    assert len(records(out)) == 1
    assert len(run_search(toy_config(out, trials=2), resume=True).trials) == 2


# ----------------------------------------------------------------------------------------------- Ray

RAY = ["--backend", "ray", "--workers", "1", "--quiet"]


@pytest.mark.slow
def test_ray_resume_tops_up_with_distinct_parameter_sets(tmp_path: Path) -> None:
    """A resumed Ray search reruns no finished parameter set (it used to re-propose the seeded sampler's
    first points and the default) and tops up to --trials distinct trials."""
    root = make_distribution(tmp_path / "site")
    env = subprocess_env(root)
    out = tmp_path / "run"
    for n in (3, 6):
        args = cli("search", *TOY, *RAY, "--trials", str(n), "--out", str(out))
        done = subprocess.run(
            [*args, "--resume"] if n == 6 else args, env=env, capture_output=True, text=True, timeout=600
        )
        assert done.returncode == 0, done.stderr[-3000:]
    check_complete(out, 6)


@pytest.mark.slow
def test_ray_kill_9_then_resume(tmp_path: Path) -> None:
    """kill -9 of a Ray search (driver and its Ray processes), then --resume: the finished trials' records
    are kept byte for byte, no parameter set runs twice, and every MLflow run ends FINISHED."""
    root = make_distribution(tmp_path / "site")
    out = tmp_path / "run"
    args = cli("search", *TOY, *RAY, "--trials", "5", "--out", str(out))
    env = subprocess_env(root, TOY_SLEEP="3")
    proc = subprocess.Popen(
        args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
    )
    try:
        wait_for(lambda: len(lines(out / "trials.jsonl")) >= 2, 400, "two Ray trials")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the driver and the Ray processes it started
        proc.wait()
    before = lines(out / "trials.jsonl")
    assert 2 <= len(before) < 5
    finished = subprocess.run(
        [*args, "--resume"], env={**env, "TOY_SLEEP": "0"}, capture_output=True, text=True, timeout=600
    )
    assert finished.returncode == 0, finished.stderr[-3000:]
    after = lines(out / "trials.jsonl")
    kept = {json.loads(line)["number"]: line for line in before}
    assert [line for line in after if json.loads(line)["number"] in kept] == list(kept.values())
    check_complete(out, 5)


def test_a_search_refused_while_the_holder_writes_its_name_still_names_it(tmp_path: Path) -> None:
    """The holder writes its name just after taking the lock; a search that loses the race in between
    waits for the name instead of reporting an unnamed holder (a race CI hit)."""
    import fcntl

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    fd = os.open(run_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    name = {"pid": 4242, "host": socket.gethostname(), "started": "now", "command": "search"}
    writer = threading.Timer(0.2, lambda: os.write(fd, (json.dumps(name) + "\n").encode()))
    writer.start()
    try:
        with pytest.raises(RunDirBusyError, match="pid 4242"):
            lock_run_dir(run_dir)
    finally:
        writer.join()
        os.close(fd)
