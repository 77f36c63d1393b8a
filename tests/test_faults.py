"""Faults and nonsense input (issue 12, items 4-7): checked before any work, rejected rather than
searched, an exit status that tells the truth, and never an "unexpected" error for bad input.

Most cases fail in validation, seconds after the start, and leave no run directory behind.
"""

from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path

import pytest
import torch
import yaml
from PIL import Image

from automl_prune.search.records import SearchInfo, TrialRecord
from automl_prune.space import builtin_space_path
from tests.toy import cli, make_distribution, subprocess_env

ROOT = Path(__file__).parents[1]


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(cli(*args), capture_output=True, text=True, timeout=300, cwd=ROOT, env=env)


def assert_clean_error(done: subprocess.CompletedProcess, *needles: str, status: int = 2) -> None:
    assert done.returncode == status, (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr + done.stdout, done.stderr
    assert "error:" in done.stderr and "fix:" in done.stderr, done.stderr
    for needle in needles:
        assert needle in done.stderr, done.stderr


def search(out: Path, *extra: str, model: str = "resnet20", data: str = "digits") -> list[str]:
    """A short magnitude search (fine-tuning 0 epochs: were it to run, it would run fast)."""
    return [
        "search",
        *("--strategy", "magnitude", "--model", model, "--data", data, "--out", str(out)),
        *("--trials", "1", "--base-epochs", "1", "--set", "finetune_epochs=0", "--quiet", *extra),
    ]


def magnitude_space(tmp_path: Path, edit) -> Path:
    space = yaml.safe_load(builtin_space_path("magnitude").read_text())
    edit(space["params"])
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(space))
    return path


def images(folder: Path, n: int, *, seed: int = 0) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(seed)
    paths = []
    for i in range(n):
        pixels = (torch.rand(8, 8, generator=g) * 255).to(torch.uint8).numpy()
        paths.append(folder / f"{i}.png")
        Image.fromarray(pixels, mode="L").save(paths[-1])
    return paths


# ------------------------------------------------------------------- rejected before any work (4, 5, 7)


def _bad_space_binary(tmp_path: Path) -> list[str]:
    path = tmp_path / "space.yaml"
    path.write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe" + bytes(range(256)))
    return ["--space", str(path)]


CASES = {
    "lr beyond the declared limits": (lambda t: ["--set", "lr=50"], ["'lr' = 50 is outside", "1e-06, 1"]),
    "budget ratio above 1": (lambda t: ["--set", "target_flops_ratio=1.5"], ["ratio", "(0, 1]"]),
    "negative base epochs": (lambda t: ["--base-epochs", "-1"], ["--base-epochs must be at least 0"]),
    "zero base lr": (lambda t: ["--base-lr", "0"], ["--base-lr must be"]),
    "batch size 0": (lambda t: ["--batch-size", "0"], ["--batch-size must be at least 1"]),
    "device tpu9": (lambda t: ["--device", "tpu9"], ["unknown device 'tpu9'"]),
    "space is a folder": (lambda t: ["--space", str(t)], ["is a folder"]),
    "binary space file": (_bad_space_binary, ["not UTF-8"]),
    "space with a parameter the strategy does not know": (
        lambda t: [
            "--space",
            str(magnitude_space(t, lambda p: p.update(momentum={"type": "float", "value": 0.9}))),
        ],
        ["does not know the parameters momentum"],
    ),
    "space without a parameter the strategy needs": (
        lambda t: ["--space", str(magnitude_space(t, lambda p: p.pop("scope")))],
        ["needs the parameters scope"],
    ),
    "missing weights file": (
        lambda t: ["--weights", str(t / "nope.safetensors")],
        ["nope.safetensors not found"],
    ),
    "missing --compare run": (lambda t: ["--compare", str(t / "nope")], ["--compare", "holds no search"]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_rejected_before_any_work(tmp_path: Path, case: str) -> None:
    """exit 2 with error/fix, in seconds, and no run directory (so no mlflow.db, no MLflow run)."""
    make_args, needles = CASES[case]
    out = tmp_path / "run"
    done = run(*search(out, *make_args(tmp_path)))
    assert_clean_error(done, *needles)
    assert not out.exists(), sorted(p.name for p in out.iterdir())


def test_a_model_the_strategy_cannot_trace_fails_before_trials(tmp_path: Path) -> None:
    out = tmp_path / "run"
    done = run(*search(out, model="tests.fixtures.user_models:detached"))
    assert_clean_error(done, "cannot trace tests.fixtures.user_models:detached")
    assert not out.exists()


def test_a_one_class_dataset_is_rejected(tmp_path: Path) -> None:
    images(tmp_path / "data" / "only", 8)
    out = tmp_path / "run"
    done = run(*search(out, data=f"folder:{tmp_path / 'data'}"))
    assert_clean_error(done, "1 class(es)", "at least two classes")
    assert not out.exists()


@pytest.mark.parametrize("where", ["file", "below a file"])
def test_out_that_is_a_file_or_cannot_be_created(tmp_path: Path, where: str) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("keep me")
    out = blocker if where == "file" else blocker / "run"
    done = run(*search(out))
    assert_clean_error(done, "is a file, not a folder" if where == "file" else "cannot be created")
    assert blocker.read_text() == "keep me"


def test_tracking_check_before_work_creates_nothing(tmp_path: Path) -> None:
    """The MLflow plugin's ``check_search`` checks the run directory's SQLite store without making it."""
    from automl_prune.tracking import plugin

    out = tmp_path / "deep" / "run"
    info = SearchInfo("s", "magnitude", out, "accuracy", {}, None, {}, {})
    plugin.check_search(search=info)
    assert not (tmp_path / "deep").exists()


def test_corrupt_image_in_folder_data_is_named(tmp_path: Path) -> None:
    root = tmp_path / "data"
    for split in ("train", "val", "test"):
        for label in ("a", "b"):
            images(root / split / label, 3, seed=len(split) + len(label))
    bad = root / "train" / "b" / "1.png"
    bad.write_bytes(bad.read_bytes()[:40])  # truncated after the header
    done = run(*search(tmp_path / "run", data=f"folder:{root}"))
    assert_clean_error(done, f"cannot read image {bad}")
    assert not (tmp_path / "run").exists()  # found in base training, before the first trial: nothing left


# ----------------------------------------------------------------------- exit status and MLflow (4, 6)


def test_a_search_whose_every_trial_failed_exits_3_and_fails_its_mlflow_run(tmp_path: Path) -> None:
    from mlflow import MlflowClient

    env = subprocess_env(make_distribution(tmp_path / "site"), TOY_RUN_LOG=str(tmp_path / "calls.log"))
    env["TOY_FAIL_CALLS"] = "1,2"  # call 1 raises, call 2 returns NaN
    out = tmp_path / "run"
    toy = ("--strategy", "toy-keep-first", "--model", "toy-cnn", "--data", "digits", "--base-epochs", "1")
    done = run("search", *toy, "--trials", "2", "--quiet", "--out", str(out), env=env)
    assert_clean_error(done, "all 2 trials failed", "toy failure on call 1", status=3)
    records = [json.loads(line) for line in (out / "trials.jsonl").read_text().splitlines()]
    assert [r["state"] for r in records] == ["failed", "failed"]
    client = MlflowClient(tracking_uri=f"sqlite:///{out / 'mlflow.db'}")
    parent = client.get_run((out / "mlflow_parent_run_id").read_text().strip())
    assert parent.info.status == "FAILED"
    assert "toy failure on call 1" in parent.data.tags["error"]


def test_diverged_trials_are_failed_never_champion(
    toy_plugin: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A trial with a NaN val loss, or NaN weights, is failed even when its accuracy looks best."""
    from automl_prune_toy import KeepFirst

    from automl_prune.search.config import SearchConfig
    from automl_prune.search.orchestrator import run_search

    calls = []
    original = KeepFirst.run

    def run_trial(self, context, params, artifacts):
        candidate = original(self, context, params, artifacts)
        calls.append(len(calls))
        if len(calls) == 1:
            candidate.quality, candidate.metrics["val_loss"] = 0.99, math.nan
        elif len(calls) == 2:
            candidate.quality = 0.99
            with torch.no_grad():
                candidate.model.fc.bias[0] = math.nan
        return candidate

    monkeypatch.setattr(KeepFirst, "run", run_trial)
    config = SearchConfig(
        strategy="toy-keep-first", model="toy-cnn", data="digits", out=str(tmp_path / "run"), base_epochs=1
    )
    result = run_search(SearchConfig(**{**config.to_dict(), "trials": 3, "quiet": True}))
    states = {r.number: (r.state, r.error or "") for r in result.trials}
    assert states[0][0] == states[1][0] == "failed" and states[2][0] == "complete", states
    assert "val_loss = nan" in states[0][1] and "weights are NaN" in states[1][1]
    assert [r.number for r in result.front] == [2]
    promotion = json.loads((tmp_path / "run" / "promotion.json").read_text())
    assert promotion["trial_number"] == 2 and promotion["version"] is not None


def test_classification_training_stops_when_the_loss_diverges() -> None:
    from torch.utils.data import TensorDataset

    from automl_prune.data.base import DataInfo, DataSplits
    from automl_prune.errors import AutomlPruneError
    from automl_prune.progress import Progress
    from automl_prune.tasks.classification import ClassificationTask

    x, y = torch.randn(64, 1, 4, 4), torch.randint(0, 2, (64,))
    data = DataSplits(*(TensorDataset(x, y),) * 3, DataInfo("t", "classification", 1, (4, 4), 2))
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(16, 2))
    with pytest.raises(AutomlPruneError, match="training diverged"):
        ClassificationTask().train(
            model, data, epochs=2, lr=1e12, batch_size=16, device=torch.device("cpu"), seed=0,
            progress=Progress(quiet=True),
        )  # fmt: skip


def test_nan_quality_is_never_on_a_front_nor_registered() -> None:
    from automl_prune.search.pareto import pareto_front
    from automl_prune.tracking.registry import select_best

    nan = TrialRecord(0, "complete", {"a": 0}, quality=math.nan, flops=1, feasible=True, model_dir="m0")
    good = TrialRecord(1, "complete", {"a": 1}, quality=0.5, flops=2, feasible=True, model_dir="m1")
    assert pareto_front([nan, good]) == [good]
    assert select_best([nan, good], None) is good


# ------------------------------------------------------------- other commands: checked before loading (7)


@pytest.mark.parametrize(
    ("option", "needle"),
    [
        (["--split", "bogus"], "unknown split 'bogus'"),
        (["--batch-size", "0"], "--batch-size must be at least 1"),
        (["--device", "tpu9"], "unknown device 'tpu9'"),
    ],
)
def test_evaluate_checks_its_options_before_loading_anything(
    tmp_path: Path, option: list, needle: str
) -> None:
    assert_clean_error(run("evaluate", str(tmp_path / "no-such-model"), *option), needle)


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from automl_prune.data.registry import load_dataset
    from automl_prune.models.base import ModelRef
    from automl_prune.models.registry import build_model
    from automl_prune.pruning.persistence import save_pruned

    info = load_dataset("digits").info
    ref = ModelRef("resnet20", {})
    path = tmp_path_factory.mktemp("saved") / "model"
    return save_pruned(
        build_model(ref, info).eval(), path, model_ref=ref, info=info, metadata={"data": "digits"}
    )


def test_export_to_a_path_that_cannot_be_written(tmp_path: Path, saved_model: Path) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("keep me")
    done = run("export", str(saved_model), "--out", str(blocker / "model.onnx"))
    assert_clean_error(done, "--out", "cannot be created")
    assert blocker.read_text() == "keep me"


def fake_run_dir(path: Path) -> Path:
    path.mkdir(parents=True)
    info = SearchInfo(
        name="fake",
        strategy="magnitude",
        run_dir=path,
        quality_metric="accuracy",
        base={"quality": 0.9, "flops": 100.0, "n_params": 10.0, "latency_ms": 1.0},
        max_flops=None,
        config={"model": "resnet20", "data": "digits", "weights": None},
        conventions={},
    )
    (path / "search.json").write_text(info.to_json())
    record = TrialRecord(
        0, "complete", {"a": 1}, quality=0.8, flops=50, n_params=5, latency_ms=1.0, feasible=True
    )
    (path / "trials.jsonl").write_text(json.dumps(record.to_dict()) + "\n")
    return path


def test_front_plot_to_a_path_that_cannot_be_written(tmp_path: Path) -> None:
    run_dir = fake_run_dir(tmp_path / "run")
    blocker = tmp_path / "blocker"
    blocker.write_text("keep me")
    assert run("front", str(run_dir)).returncode == 0
    done = run("front", str(run_dir), "--plot", str(blocker / "front.png"))
    assert_clean_error(done, "--plot", "cannot be created")


@pytest.mark.parametrize(
    ("name", "text", "needle"),
    [
        ("search.json", '{"name": "fake", "strat', "search.json is not a search record"),
        ("trials.jsonl", '{"number": 0, "state": "comp', "trials.jsonl line 1 is not a trial record"),
    ],
)
def test_front_on_a_corrupt_record(tmp_path: Path, name: str, text: str, needle: str) -> None:
    run_dir = fake_run_dir(tmp_path / "run")
    (run_dir / name).write_text(text)
    assert_clean_error(run("front", str(run_dir)), needle)


def test_front_compare_with_a_corrupt_run(tmp_path: Path) -> None:
    run_dir = fake_run_dir(tmp_path / "run")
    other = fake_run_dir(tmp_path / "other")
    (other / "search.json").write_bytes(b"\xff\xfe not json")
    assert_clean_error(run("front", str(run_dir), "--compare", str(other)), "not a search record")
