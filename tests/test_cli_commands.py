"""The CLI on a user's own pretrained network: prune, evaluate, export, search, front, promote."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import onnx
import pytest
import torch

from automl_prune.data.registry import load_dataset
from automl_prune.models.cifar_resnet import resnet20
from automl_prune.plugins import get_plugins
from automl_prune.progress import Progress
from tests.toy import cli

USER_MODEL = [
    "--model",
    "automl_prune.models.cifar_resnet:resnet20",
    "--model-arg",
    "width=8",
    "--model-arg",
    "in_channels=1",
    "--data",
    "digits",
    "--quiet",
]


def run(*args: str) -> subprocess.CompletedProcess:
    done = subprocess.run(
        cli(*args), capture_output=True, text=True, timeout=300, cwd=Path(__file__).parents[1]
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done


@pytest.fixture(scope="module")
def user_weights(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, float]:
    """A network 'the user' trained and saved as a plain state dict, and its validation accuracy."""
    data = load_dataset("digits")
    task = get_plugins().tasks.get("classification")
    model = resnet20(width=8, in_channels=1)
    task.train(
        model,
        data,
        epochs=3,
        lr=0.1,
        batch_size=64,
        device=torch.device("cpu"),
        seed=0,
        progress=Progress(quiet=True),
    )
    path = tmp_path_factory.mktemp("user") / "my_resnet.pt"
    torch.save(model.state_dict(), path)
    accuracy = task.evaluate(model, data, "val", batch_size=64, device=torch.device("cpu"))["accuracy"]
    return path, accuracy


def test_prune_evaluate_export_a_user_model(user_weights: tuple[Path, float], tmp_path: Path) -> None:
    weights, accuracy = user_weights
    out = tmp_path / "pruned"
    done = run(
        "prune",
        "--strategy",
        "magnitude",
        *USER_MODEL,
        "--weights",
        str(weights),
        "--max-flops",
        "0.5",
        "--set",
        "finetune_epochs=1",
        "--out",
        str(out),
    )
    report = json.loads(done.stdout)
    assert report["base"]["quality"] == pytest.approx(accuracy)  # the user's weights, not a retrained model
    assert report["flops"] <= 0.5 * report["base"]["flops"]
    model_dir = report["model_dir"]
    assert Path(model_dir, "spec.json").exists() and Path(model_dir, "model.safetensors").exists()

    # a model pruned from the user's module:factory: its spec names code, so loading it is opted into
    evaluated = json.loads(run("evaluate", model_dir, "--split", "test", "--trust-model-code").stdout)
    assert evaluated["flops"] == report["flops"] and evaluated["n_params"] == report["n_params"]
    assert 0.0 <= evaluated["accuracy"] <= 1.0 and evaluated["split"] == "test"

    onnx_path = tmp_path / "m.onnx"
    run("export", model_dir, "--format", "onnx", "--out", str(onnx_path), "--trust-model-code")
    onnx.checker.check_model(onnx.load(str(onnx_path)))
    ts_path = tmp_path / "m.pt"
    run("export", model_dir, "--format", "torchscript", "--out", str(ts_path), "--trust-model-code")
    scripted = torch.jit.load(str(ts_path))
    import automl_prune

    x = torch.randn(2, 1, 16, 16)
    torch.testing.assert_close(scripted(x), automl_prune.load(model_dir, trust_code=True)(x))


def test_search_front_and_promote(user_weights: tuple[Path, float], tmp_path: Path) -> None:
    weights, _ = user_weights
    out = tmp_path / "run"
    done = run(
        "search",
        "--strategy",
        "magnitude",
        *USER_MODEL,
        "--weights",
        str(weights),
        "--trials",
        "2",
        "--max-flops",
        "0.6",
        "--set",
        "finetune_epochs=1",
        "--out",
        str(out),
    )
    assert "Pareto front" in done.stdout and "champion" in done.stdout
    other = tmp_path / "uniform"
    run(
        "search",
        "--strategy",
        "magnitude",
        *USER_MODEL,
        "--weights",
        str(weights),
        "--trials",
        "1",
        "--set",
        "scope=uniform",
        "--set",
        "finetune_epochs=1",
        "--compare",
        str(out),
        "--out",
        str(other),
    )
    front = run("front", str(out), "--compare", str(other), "--plot", str(tmp_path / "both.png"))
    assert "Pareto front" in front.stdout and "base" in front.stdout and "magnitude (uniform)" in front.stdout
    assert (tmp_path / "both.png").read_bytes()[:4] == b"\x89PNG"
    promoted = run("promote", str(out))
    assert "champion" in promoted.stdout


def test_evaluate_takes_data_args(tmp_path: Path) -> None:
    """``--data-arg`` reaches the dataset: it extends or overrides the options the model was pruned with."""
    from typer.testing import CliRunner

    from automl_prune.cli import app
    from automl_prune.errors import AutomlPruneError
    from automl_prune.models.base import ModelRef
    from automl_prune.pruning import save_pruned

    info = load_dataset("digits").info
    model = resnet20(width=8, in_channels=1)
    ref = ModelRef("resnet20", {"width": 8})
    path = save_pruned(
        model, tmp_path / "model", model_ref=ref, info=info, metadata={"data": "digits", "data_args": {}}
    )
    runner = CliRunner()
    done = runner.invoke(app, ["evaluate", str(path), "--data-arg", "seed=1", "--split", "val"])
    assert done.exit_code == 0, done.output
    assert json.loads(done.stdout)["data"] == "digits"  # latency warnings go to stderr
    wrong = runner.invoke(app, ["evaluate", str(path), "--data-arg", "size=8"])
    assert isinstance(wrong.exception, AutomlPruneError), wrong.output
    assert "(1, 8, 8)" in wrong.exception.problem  # the option reached the dataset
    typo = runner.invoke(app, ["evaluate", str(path), "--data-arg", "size"])
    assert isinstance(typo.exception, AutomlPruneError) and "key=value" in typo.exception.fix


def test_export_help_says_where_the_file_goes() -> None:
    from typer.testing import CliRunner

    from automl_prune.cli import app

    shown = CliRunner().invoke(app, ["export", "--help"], env={"COLUMNS": "200"})
    assert shown.exit_code == 0
    assert "PATH/model.onnx" in shown.output and "PATH/export-FORMAT" in shown.output
