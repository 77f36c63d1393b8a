"""Evaluate and export saved pruned models, at the input shape and data recorded in their spec."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from automl_prune.data.base import DataInfo
from automl_prune.data.registry import load_dataset
from automl_prune.errors import AutomlPruneError
from automl_prune.flops import FLOPS_CONVENTION, count_flops, count_params
from automl_prune.latency import latency_convention, measure_latency_ms
from automl_prune.plugins import get_plugins
from automl_prune.pruning import export_onnx, export_torchscript, load_pruned, read_spec
from automl_prune.search.setup import resolve_device

EXPORTERS = {"onnx": (export_onnx, ".onnx"), "torchscript": (export_torchscript, ".pt")}


def _example(spec: dict[str, Any], batch: int = 1) -> torch.Tensor:
    info = spec["data_info"]
    return torch.zeros(batch, info["in_channels"], *info["image_size"])


def evaluate_saved(
    path: str | Path, *, data: str | None, split: str, device: str, batch_size: int
) -> dict[str, Any]:
    """Quality on ``split`` (test by default in the CLI: this is the final report, not selection),
    FLOPs, parameters and batch-1 latency of a saved model."""
    spec = read_spec(path)
    meta = spec["metadata"]
    spec_data = data or meta.get("data")
    if spec_data is None:
        raise AutomlPruneError(f"{path} does not record its dataset", "pass --data")
    splits = load_dataset(spec_data, **({} if data else meta.get("data_args", {})))
    saved = DataInfo(**{**spec["data_info"], "image_size": tuple(spec["data_info"]["image_size"])})
    if splits.info.input_shape != saved.input_shape:
        raise AutomlPruneError(
            f"dataset {spec_data!r} yields inputs {splits.info.input_shape}, "
            f"the model expects {saved.input_shape}",
            "pass the dataset (and --data-arg size=...) the model was pruned on",
        )
    dev = resolve_device(device)
    model = load_pruned(path).to(dev)
    task = get_plugins().tasks.get(splits.info.task)
    metrics = task.evaluate(model, splits, split, batch_size=batch_size, device=dev)
    example = _example(spec).to(dev)
    return {
        "model": str(path),
        "data": spec_data,
        "split": split,
        **metrics,
        "flops": count_flops(model, example),
        "n_params": count_params(model),
        "latency_ms": measure_latency_ms(model, example),
        "conventions": {"flops": FLOPS_CONVENTION, "latency": latency_convention(dev)},
    }


def export_saved(path: str | Path, fmt: str, out: str | Path | None = None) -> Path:
    """Export a saved model to ONNX or TorchScript at its recorded input shape, batch 1."""
    if fmt not in EXPORTERS:
        raise AutomlPruneError(f"unknown export format {fmt!r}", f"use one of {', '.join(EXPORTERS)}")
    spec = read_spec(path)
    exporter, suffix = EXPORTERS[fmt]
    target = Path(out) if out else Path(path) / f"model{suffix}"
    return exporter(load_pruned(path), _example(spec), target)
