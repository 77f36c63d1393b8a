"""Pruned models as MLflow models: ``mlflow.pyfunc.load_model(uri).predict(x)`` runs the pruned network.

A trial's saved model (``spec.json`` + ``model.safetensors``, or a composite's ``manifest.json`` + one
such directory per part) is logged as an MLflow 3 *logged model* named ``model`` whose directory is the
saved model itself plus MLflow's files (``MLmodel``, requirements, input example). So the files sit
once in the store, ``automl_prune.load`` reads the downloaded directory as it is, and
``runs:/<run_id>/model`` still resolves to them (MLflow 3 maps a run's model name to its logged model).

- Flavour: pyfunc with this module as its *loader module* (MLflow's custom-flavour route). Nothing is
  pickled: no cloudpickled ``PythonModel``; loading imports this module and calls
  :func:`_load_pyfunc`, which rebuilds the model with :func:`automl_prune.load`.
- Input and output, numpy at batch N: a model taking one tensor (a classifier, an image translator)
  takes one ``float32`` array ``(N, C, H, W)`` and returns its output array (a classifier's logits
  ``(N, classes)``). A model taking several tensors (a diffusion UNet or a composite of UNets) takes a
  dict of arrays named after its ``forward`` parameters (``{"sample": (N, C, H, W) float32,
  "timestep": (N,) int64}``) and returns the predicted noise. A model with several outputs returns
  ``{"output_0": ..., ...}``. The signature is inferred from the task's example input at batch 1 (zeros,
  the input example) and the model's output on it.
- Trusted code: a model pruned from a ``module:factory`` (or any name that is not a plain registered
  model) loads only with ``trust_code`` (:func:`automl_prune.load`). Logging runs the model once (the
  signature), so it takes ``trust_code`` from its caller: the search that built the model trusts it,
  ``automl-prune promote`` of an earlier run directory does not (such a model then stays plain files).
  The logged model records ``model_config={"trust_code": True}`` exactly when its spec needs it,
  because loading any MLflow model already trusts its store (``MLmodel`` names the module MLflow
  imports); ``mlflow.pyfunc.load_model(uri, model_config={"trust_code": False})`` refuses such a model,
  and ``{"device": "cuda"}`` runs it on a GPU (default cpu).
- Requirements are stated (``automl-prune``, ``torch``, and ``timm`` for a ``timm:`` model), so MLflow
  neither loads the model in a subprocess to infer them nor reads a uv project.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import inspect
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    from mlflow import MlflowClient
    from mlflow.entities import LoggedModel
    from mlflow.models import Model
    from torch import nn

    from automl_prune.model_io import Inputs

#: The logged model's name: ``runs:/<run_id>/model`` resolves to it, where the plain files were before.
MODEL_NAME = "model"

#: Optional packages a model needs beyond automl-prune's own dependencies, by model-name prefix.
OPTIONAL_PACKAGES = {"timm:": "timm"}


class PrunedModelPyfunc:
    """What ``mlflow.pyfunc.load_model`` wraps: a loaded pruned model called on numpy arrays."""

    def __init__(self, model: nn.Module, device: str = "cpu") -> None:
        self.model = model.to(device).eval()
        self.device = device

    def predict(self, data: Any, params: dict[str, Any] | None = None) -> Any:
        """One forward pass on ``data``: an array, or for a multi-input model a dict of arrays passed by
        name (``model(sample=..., timestep=...)``)."""
        import torch

        from automl_prune.model_io import call, output_tensors

        if isinstance(data, Mapping):
            inputs: Inputs = {k: torch.as_tensor(_array(v)).to(self.device) for k, v in data.items()}
        else:
            inputs = torch.as_tensor(_array(data)).to(self.device)
        with torch.inference_mode():
            outputs = [t.detach().cpu().numpy() for t in output_tensors(call(self.model, inputs))]
        return outputs[0] if len(outputs) == 1 else {f"output_{i}": o for i, o in enumerate(outputs)}


def _array(value: Any) -> np.ndarray:
    import numpy as np

    return value.to_numpy() if hasattr(value, "to_numpy") else np.asarray(value)


def _load_pyfunc(data_path: str, model_config: dict[str, Any] | None = None) -> PrunedModelPyfunc:
    """MLflow's loader-module entry point: ``data_path`` is the logged model's directory."""
    from automl_prune import load

    config = model_config or {}
    model = load(data_path, trust_code=bool(config.get("trust_code", False)))
    return PrunedModelPyfunc(model, device=str(config.get("device", "cpu")))


def input_names(model: nn.Module, count: int) -> list[str]:
    """Names of a multi-input model's first ``count`` positional inputs: its ``forward`` parameters (a
    composite's first part's, since a composite forwards ``*args``), which predict passes by name."""
    from automl_prune.errors import ModelError
    from automl_prune.pruning import CompositeModel

    target = model.parts[0] if isinstance(model, CompositeModel) else model
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    names = [p.name for p in inspect.signature(target.forward).parameters.values() if p.kind in kinds]
    if len(names) < count:
        raise ModelError(
            f"{type(target).__name__}.forward names {len(names)} of its {count} inputs, and the MLflow "
            "model passes each input by name",
            "give forward one named parameter per input; automl_prune.load loads the model meanwhile",
        )
    return names[:count]


def example_arrays(model: nn.Module, inputs: Inputs) -> Any:
    """The task's example input as what :meth:`PrunedModelPyfunc.predict` takes."""
    from automl_prune.model_io import positional

    tensors = [t.numpy() for t in positional(inputs)]
    if len(tensors) == 1:
        return tensors[0]
    return dict(zip(input_names(model, len(tensors)), tensors, strict=True))


def pip_requirements(spec: dict[str, Any]) -> list[str]:
    """automl-prune, torch and the packages the model's name needs, pinned to the installed versions
    (a local build tag such as ``+cpu`` dropped, so pip can resolve it)."""
    name = str(spec["model_ref"]["name"])
    wanted = [
        "automl-prune",
        "torch",
        *(pkg for prefix, pkg in OPTIONAL_PACKAGES.items() if name.startswith(prefix)),
    ]
    out = []
    for dist in dict.fromkeys(wanted):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            out.append(f"{dist}=={importlib.metadata.version(dist).split('+')[0]}")
    return out


def save_mlflow_model(
    model_dir: str | Path, path: str | Path, mlflow_model: Model | None = None, *, trust_code: bool = False
) -> Model:
    """Write the saved pruned model at ``model_dir`` as an MLflow pyfunc model in the new directory
    ``path``: MLflow's files plus a copy of the model's own files at its top level. The model is run
    once for the signature, so one built from outside code needs ``trust_code``
    (:func:`automl_prune.load`)."""
    import mlflow.pyfunc
    from mlflow.models import Model, infer_signature

    from automl_prune import load
    from automl_prune.evaluation import saved_task
    from automl_prune.model_io import to_device
    from automl_prune.models.base import ModelRef
    from automl_prune.models.registry import outside_code
    from automl_prune.pruning import read_spec
    from automl_prune.tracking.store import mlflow_setting

    spec = read_spec(model_dir)
    trust = outside_code(ModelRef.from_dict(spec["model_ref"])) is not None
    model = load(model_dir, trust_code=trust_code)
    task, shapes = saved_task(spec)
    inputs = to_device(task.example_input(shapes, 1), "cpu")
    example = example_arrays(model, inputs)
    output = PrunedModelPyfunc(model).predict(example)
    mlflow_model = mlflow_model or Model()
    with mlflow_setting("MLFLOW_UV_AUTO_DETECT", "false"):
        mlflow.pyfunc.save_model(
            str(path),
            loader_module=__name__,
            mlflow_model=mlflow_model,
            signature=infer_signature(example, output),
            input_example=example,
            pip_requirements=pip_requirements(spec),
            model_config={"trust_code": trust, "device": "cpu"},
        )
    for item in Path(model_dir).iterdir():
        copy = shutil.copytree if item.is_dir() else shutil.copy2
        copy(item, Path(path) / item.name)
    mlflow_model.model_size_bytes = sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())
    mlflow_model.save(str(Path(path) / "MLmodel"))
    return mlflow_model


def log_pruned_model(
    client: MlflowClient, experiment_id: str, run_id: str, model_dir: str | Path, *, trust_code: bool = False
) -> str:
    """Log the saved model at ``model_dir`` as the logged model ``model`` of run ``run_id`` (READY once
    its files are stored; deleted again when logging fails) and return its id. ``trust_code``: as for
    :func:`save_mlflow_model`."""
    from mlflow.entities import LoggedModelOutput
    from mlflow.models import Model

    logged = client.create_logged_model(
        experiment_id, name=MODEL_NAME, source_run_id=run_id, model_type="pruned"
    )
    try:
        meta = Model(
            artifact_path=logged.artifact_location,
            model_uuid=logged.model_id,
            run_id=run_id,
            model_id=logged.model_id,
        )
        with tempfile.TemporaryDirectory(prefix="automl-prune-mlflow-") as tmp:
            save_mlflow_model(model_dir, Path(tmp) / MODEL_NAME, meta, trust_code=trust_code)
            client.log_model_artifacts(logged.model_id, str(Path(tmp) / MODEL_NAME))
        client.log_outputs(run_id, [LoggedModelOutput(logged.model_id, step=0)])
        client.finalize_logged_model(logged.model_id, "READY")
    except BaseException:
        # deleted, not left FAILED: MLflow 3 would resolve runs:/<run_id>/model to it (and its
        # artifact listing of the run's model/ fails unless the global tracking URI is this store)
        with contextlib.suppress(Exception):
            client.delete_logged_model(logged.model_id)
        raise
    return logged.model_id


def ready_model(client: MlflowClient, run_id: str) -> LoggedModel | None:
    """The READY logged model ``model`` of run ``run_id`` (the latest step's), or None."""
    outputs = client.get_run(run_id).outputs
    for out in sorted(outputs.model_outputs if outputs else [], key=lambda o: -o.step):
        logged = client.get_logged_model(out.model_id)
        if logged.name == MODEL_NAME and str(logged.status) == "READY":
            return logged
    return None
