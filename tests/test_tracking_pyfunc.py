"""Pruned models as MLflow pyfunc models: a search's champion loads with ``mlflow.pyfunc.load_model`` and
predicts what ``automl_prune.load`` does; multi-input models (a composite of diffusion UNets) take a dict.
"""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch
import yaml

import automl_prune
from automl_prune.data.registry import load_dataset
from automl_prune.diffusion.sampling import TRAIN_TIMESTEPS
from automl_prune.models.base import ModelRef
from automl_prune.models.registry import build_model
from automl_prune.pruning import CompositeModel, TimestepRouter, save_pruned
from automl_prune.search.config import SearchConfig
from automl_prune.search.orchestrator import run_search
from automl_prune.tracking.pyfunc import save_mlflow_model
from automl_prune.tracking.registry import CHAMPION_ALIAS

pytestmark = pytest.mark.timeout(300)


@pytest.fixture
def global_uri():
    """Point MLflow's global URIs (what a user's fluent calls read) at a store, and back after the test."""

    def use(uri: str) -> None:
        mlflow.set_tracking_uri(uri)
        mlflow.set_registry_uri(uri)

    yield use
    mlflow.set_tracking_uri(None)
    mlflow.set_registry_uri(None)


def test_search_champion_loads_with_mlflow_pyfunc(tmp_path: Path, global_uri) -> None:
    out = tmp_path / "run"
    result = run_search(
        SearchConfig(
            strategy="magnitude",
            model="resnet20",
            model_args={"width": 4},
            data="digits",
            out=str(out),
            trials=2,
            max_flops="0.6",
            base_epochs=1,
            base_lr=0.1,
            overrides=["finetune_epochs=0"],
            quiet=True,
        )
    )
    assert all(t.state == "complete" for t in result.trials), result.trials[0].error
    promotion = json.loads((out / "promotion.json").read_text())
    assert promotion["promoted"] and promotion["model_id"] and "plain files" not in promotion["reason"]
    global_uri(f"sqlite:///{out}/mlflow.db")  # as a user reads the store
    client = mlflow.MlflowClient()
    [registered] = [m for m in client.search_registered_models() if CHAMPION_ALIAS in (m.aliases or {})]
    version = client.get_model_version_by_alias(registered.name, CHAMPION_ALIAS)
    assert version.run_id == promotion["run_id"]

    champion = mlflow.pyfunc.load_model(f"models:/{registered.name}@{CHAMPION_ALIAS}")
    x = np.random.default_rng(0).normal(size=(5, 1, 16, 16)).astype(np.float32)
    got = champion.predict(x)
    best = next(t for t in result.trials if t.number == promotion["trial_number"])
    with torch.no_grad():
        want = automl_prune.load(best.model_dir)(torch.from_numpy(x)).numpy()
    assert got.shape == (5, 10) and np.array_equal(got, want)
    inputs = champion.metadata.get_input_schema().inputs
    assert [(s.type, s.shape) for s in inputs] == [(np.dtype("float32"), (-1, 1, 16, 16))]

    # every trial's model is an MLflow model; its plain files sit where the run's model/ was
    for trial in result.trials:
        run = client.search_runs(
            [client.get_experiment_by_name(f"automl-prune/{out.name}").experiment_id],
            f"tags.trial_number = '{trial.number}'",
        )[0]
        [output] = run.outputs.model_outputs
        assert client.get_logged_model(output.model_id).status == "READY"
        got_dir = Path(
            mlflow.artifacts.download_artifacts(
                f"runs:/{run.info.run_id}/model", dst_path=str(tmp_path / f"dl{trial.number}")
            )
        )
        assert {"spec.json", "model.safetensors", "MLmodel"} <= {p.name for p in got_dir.iterdir()}
        requirements = (got_dir / "requirements.txt").read_text().split()
        assert f"torch=={torch.__version__.split('+')[0]}" in requirements and any(
            r.startswith("automl-prune==") for r in requirements
        )
        assert yaml.safe_load((got_dir / "MLmodel").read_text())["flavors"]["python_function"]["config"] == {
            "trust_code": False,
            "device": "cpu",
        }
        # the run directory's own copy is the plain model, untouched
        assert sorted(p.name for p in Path(trial.model_dir).iterdir()) == ["model.safetensors", "spec.json"]


def test_composite_unets_take_a_dict_of_sample_and_timestep(tmp_path: Path) -> None:
    info = load_dataset("digits", size=16).info
    ref = ModelRef("ddpm-unet-tiny")
    parts = [build_model(ref, info) for _ in range(2)]  # two differently initialised parts
    composite = CompositeModel(parts, TimestepRouter([0, 300, TRAIN_TIMESTEPS])).eval()
    path = save_pruned(composite, tmp_path / "moe", model_ref=ref, info=info)
    meta = save_mlflow_model(path, tmp_path / "mlflow-model")
    assert json.loads(meta.signature.to_dict()["inputs"]) == [
        {"type": "tensor", "tensor-spec": {"dtype": "float32", "shape": [-1, 1, 16, 16]}, "name": "sample"},
        {"type": "tensor", "tensor-spec": {"dtype": "int64", "shape": [-1]}, "name": "timestep"},
    ]
    model = mlflow.pyfunc.load_model(str(tmp_path / "mlflow-model"))
    x = np.random.default_rng(0).normal(size=(4, 1, 16, 16)).astype(np.float32)
    t = np.array([5, 950, 299, 300])  # both parts in one batch
    got = model.predict({"sample": x, "timestep": t})
    with torch.no_grad():
        want = automl_prune.load(path)(torch.from_numpy(x), torch.from_numpy(t)).sample.numpy()
    assert np.array_equal(got, want)
