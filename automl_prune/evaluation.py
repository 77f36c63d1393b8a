"""Evaluate and export saved pruned models, at the input shape and data recorded in their spec."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from automl_prune.data.base import DataInfo, DataSplits
from automl_prune.data.registry import load_dataset
from automl_prune.errors import AutomlPruneError
from automl_prune.io import atomic_write_text
from automl_prune.latency import latency_convention
from automl_prune.progress import Progress
from automl_prune.pruning import CompositeModel, export_onnx, export_torchscript, load_pruned, read_spec
from automl_prune.pruning.persistence import MANIFEST
from automl_prune.search.setup import resolve_device
from automl_prune.search.validate import check_count, check_output_dir, check_output_file, check_split
from automl_prune.tasks import task_for
from automl_prune.tasks.base import Task

EXPORTERS = {"onnx": (export_onnx, ".onnx"), "torchscript": (export_torchscript, ".pt")}


def saved_task(spec: dict[str, Any]) -> tuple[Task, DataSplits]:
    """The task of a saved model and data with its recorded shape (no samples: for example inputs)."""
    info = DataInfo(**{**spec["data_info"], "image_size": tuple(spec["data_info"]["image_size"])})
    return task_for(spec["model_ref"]["name"], info.task), DataSplits([], [], [], info)


def evaluate_saved(
    path: str | Path,
    *,
    data: str | None,
    split: str,
    device: str,
    batch_size: int,
    trust_code: bool = False,
    data_args: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Quality on ``split`` (test by default in the CLI: this is the final report, not selection),
    FLOPs, parameters, the task's timings and its costly report (diffusion: Frechet distances) of a
    saved model, single or composite. ``data_args`` are dataset options: they extend or override the
    ones the model was pruned with, or, with another ``data``, are its only ones."""
    check_split(split)  # the arguments first: nothing is loaded for a typo
    check_count(batch_size, "--batch-size", 1)
    resolve_device(device)
    spec = read_spec(path)
    model = load_pruned(path, trust_code=trust_code)  # first: an untrusted spec stops before any work
    meta = spec["metadata"]
    spec_data = data or meta.get("data")
    if spec_data is None:
        raise AutomlPruneError(f"{path} does not record its dataset", "pass --data")
    stored = {} if data else meta.get("data_args", {})
    splits = load_dataset(spec_data, **{**stored, **(data_args or {})})
    task, saved = saved_task(spec)
    if splits.info.input_shape != saved.info.input_shape:
        raise AutomlPruneError(
            f"dataset {spec_data!r} yields inputs {splits.info.input_shape}, "
            f"the model expects {saved.info.input_shape}",
            "pass the dataset (and --data-arg size=...) the model was pruned on",
        )
    dev = resolve_device(device)
    model = model.to(dev)
    metrics = task.evaluate(model, splits, split, batch_size=batch_size, device=dev)
    timings = task.latency(model, splits, dev)
    report = task.report(model, splits, dev, Progress(quiet=True))
    flops = task.flops(model, splits)
    return {
        "model": str(path),
        "data": spec_data,
        "split": split,
        **metrics,
        "flops": flops,
        **task.cost(model, splits, flops),
        "n_params": task.n_params(model),
        **timings,
        **report,
        "conventions": {
            "flops": task.flops_convention(),
            "latency": latency_convention(dev),
            **({"report": task.report_convention(splits)} if report else {}),
        },
    }


def export_saved(
    path: str | Path, fmt: str, out: str | Path | None = None, *, trust_code: bool = False
) -> Path:
    """Export a saved model to ONNX (dynamic batch axis) or TorchScript (traced at batch 1) at its
    recorded input shape. A composite is
    exported as one file per part (``part0.onnx``, ...) beside a copy of its manifest (the router) in
    the folder ``out`` (default: ``<path>/export-<fmt>``); the path returned is the manifest's."""
    if fmt not in EXPORTERS:
        raise AutomlPruneError(f"unknown export format {fmt!r}", f"use one of {', '.join(EXPORTERS)}")
    spec = read_spec(path)
    if out is not None:  # checked before the model is loaded
        (check_output_dir if "parts" in spec else check_output_file)(out, "--out")
    exporter, suffix = EXPORTERS[fmt]
    task, shapes = saved_task(spec)
    model = load_pruned(path, trust_code=trust_code)
    if not isinstance(model, CompositeModel):
        target = Path(out) if out else Path(path) / f"model{suffix}"
        return exporter(model, task.example_input(shapes), target)
    folder = Path(out) if out else Path(path) / f"export-{fmt}"
    for name, part in zip(spec["parts"], model.parts, strict=True):
        exporter(part, task.example_input(shapes), folder / f"{name}{suffix}")
    manifest = {**spec, "parts": [f"{name}{suffix}" for name in spec["parts"]], "export_format": fmt}
    atomic_write_text(folder / MANIFEST, json.dumps(manifest, indent=2))
    return folder / MANIFEST
