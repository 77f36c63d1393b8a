"""Evaluate and export saved pruned models, at the input shape and data recorded in their spec."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from torch import nn

from automl_prune.data.base import DataInfo, DataSplits
from automl_prune.data.preprocessing import override_options
from automl_prune.data.registry import load_dataset
from automl_prune.errors import AutomlPruneError
from automl_prune.io import atomic_write_bytes, atomic_write_text
from automl_prune.latency import EVALUATE_BUDGET_S, latency_convention, latency_metrics
from automl_prune.model_io import to_device
from automl_prune.models.base import ModelRef
from automl_prune.models.registry import build_model
from automl_prune.onnx_latency import onnxruntime_latency
from automl_prune.progress import Progress
from automl_prune.pruning import CompositeModel, export_onnx, export_torchscript, load_pruned, read_spec
from automl_prune.pruning.persistence import MANIFEST, ROUTER_WEIGHTS
from automl_prune.search.setup import resolve_device
from automl_prune.search.validate import (
    check_count,
    check_output_dir,
    check_output_file,
    check_rate,
    check_split,
)
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
    base: str = "unpruned",
    latency_budget_s: float = EVALUATE_BUDGET_S,
    onnxruntime: bool = False,
) -> dict[str, Any]:
    """Quality on ``split`` (test by default in the CLI: this is the final report, not selection),
    FLOPs, parameters, the task's timings and its costly report (diffusion: Frechet distances) of a
    saved model, single or composite. ``data_args`` are dataset options: they extend or override the
    ones the model was pruned with, or, with another ``data``, are its only ones.

    Timings (``timings`` holds each one's details) have a speed-up against ``base``, timed interleaved
    with the model: "unpruned" (the architecture the spec was pruned from, built with fresh weights:
    latency does not depend on their values), "none", or another saved model's directory. With
    ``onnxruntime``, the model is also exported and timed in ONNX Runtime (``onnxruntime_latency``)."""
    check_split(split)  # the arguments first: nothing is loaded for a typo
    check_count(batch_size, "--batch-size", 1)
    check_rate(latency_budget_s, "--latency-budget")
    resolve_device(device)
    if base not in ("unpruned", "none"):
        read_spec(base)  # a wrong directory is said before the model is evaluated
    spec = read_spec(path)
    model = load_pruned(path, trust_code=trust_code)  # first: an untrusted spec stops before any work
    meta = spec["metadata"]
    spec_data = data or meta.get("data")
    if spec_data is None:
        raise AutomlPruneError(f"{path} does not record its dataset", "pass --data")
    stored = {} if data else meta.get("data_args", {})
    splits = load_dataset(spec_data, **override_options(stored, data_args or {}))
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
    reference = None if base == "none" else _latency_base(spec, saved.info, base, trust_code).to(dev)
    timings = task.latency(model, splits, dev, base=reference, budget_s=latency_budget_s)
    if onnxruntime:
        if isinstance(model, CompositeModel):
            raise AutomlPruneError(
                "--onnxruntime times single models; a composite exports one ONNX file per part",
                "leave out --onnxruntime, or `automl-prune export` it and time the parts yourself",
            )
        one = to_device(task.example_input(splits, 1), dev)
        timings["onnxruntime_latency"] = onnxruntime_latency(
            model, one, base=reference, budget_s=latency_budget_s
        )
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
        **latency_metrics(timings),
        "timings": {name: t.to_dict() for name, t in timings.items()},
        **report,
        "conventions": {
            "flops": task.flops_convention(),
            "latency": latency_convention(dev, latency_budget_s),
            "latency_base": base if base in ("unpruned", "none") else str(base),
            **({"report": task.report_convention(splits)} if report else {}),
        },
    }


def _latency_base(spec: dict[str, Any], info: DataInfo, base: str, trust_code: bool) -> nn.Module:
    """The model a saved one's speed-up is timed against: its unpruned architecture ("unpruned") or
    the saved model in the directory ``base``."""
    if base == "unpruned":
        return build_model(ModelRef.from_dict(spec["model_ref"]), info).eval()
    return load_pruned(base, trust_code=trust_code)


def export_saved(
    path: str | Path, fmt: str, out: str | Path | None = None, *, trust_code: bool = False
) -> Path:
    """Export a saved model to ONNX (dynamic batch axis) or TorchScript (traced at batch 1) at its
    recorded input shape. A composite is
    exported as one file per part (``part0.onnx``, ...) beside a copy of its manifest (the router, and
    the router's tensors where it has some) in
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
    router = Path(path) / ROUTER_WEIGHTS  # a router with tensors (a prompt router's predictor and codes)
    if router.is_file():
        atomic_write_bytes(folder / ROUTER_WEIGHTS, router.read_bytes())
    manifest = {**spec, "parts": [f"{name}{suffix}" for name in spec["parts"]], "export_format": fmt}
    atomic_write_text(folder / MANIFEST, json.dumps(manifest, indent=2))
    return folder / MANIFEST
